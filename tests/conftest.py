"""Shared fixtures: the rendered sample corpus and a loopback PDF host with fault injection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.sample_corpus import build_corpus
from tests.real_corpus import build_real_corpus
from tests.servers import pdf_host

REPO = Path(__file__).resolve().parent.parent


def qa_dataset(folder: Path) -> dict[str, list[dict]]:
    """Stage 3's records, by side: train, validation, test."""
    return {side: json.loads((folder / f"{side}.json").read_text()) for side in ("train", "validation", "test")}


@pytest.fixture(scope="session")
def sample_pdf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sample_pdfs")
    build_corpus(REPO / "sample_corpus", folder)
    return folder


@pytest.fixture(scope="session")
def real_pdf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's documentation PDFs plus a truncated and an HTML-as-PDF file (tests/real_corpus.py)."""
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
