"""Shared fixtures: the rendered sample corpus and a loopback PDF host with fault injection."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.pdf_host import pdf_host
from harness.project import REPO
from harness.real_corpus import build_real_corpus
from tasks.sample_corpus import build_corpus


@pytest.fixture(scope="session")
def sample_pdf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sample_pdfs")
    build_corpus(REPO / "sample_corpus", folder)
    return folder


@pytest.fixture(scope="session")
def real_pdf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's documentation PDFs plus a truncated and an HTML-as-PDF file (harness/real_corpus.py)."""
    folder = tmp_path_factory.mktemp("real_pdfs")
    build_real_corpus(folder)
    return folder


@pytest.fixture(scope="session")
def sample_pdfs(sample_pdf_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(sample_pdf_dir.glob("*.pdf"))}


@pytest.fixture
def pdf_server(sample_pdfs: dict[str, bytes]):
    with pdf_host(sample_pdfs) as server:
        yield server
