"""Shared fixtures: the rendered sample corpus, a loopback PDF host with fault injection, and one project of the
offline profile through stage 3 that stage 4's tests and the real engine's tests build on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.pdf_host import pdf_host
from harness.project import REPO, run_pipeline, write_profile
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


@pytest.fixture(scope="session")
def stage3_project(tmp_path_factory: pytest.TempPathFactory, sample_pdf_dir: Path) -> Path:
    """The offline profile through stage 3 (W&B tracking on, offline: the seed's key names). Stage 4's tests take it
    from there in order; the engine's tests add stages 4-5 when they run without them."""
    root = tmp_path_factory.mktemp("stage4")
    write_profile(root, {"data_collector": {"local": {"pdf_dir": str(sample_pdf_dir)}},
                         "finetuning": {"wandb_enabled": True, "wandb_run_name": "nightly"}})
    result = run_pipeline(root / "config.yaml", "--end", "3", env={**os.environ, "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr
    return root
