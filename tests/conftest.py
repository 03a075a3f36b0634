"""Shared fixtures: the rendered sample corpus, a loopback PDF host with fault injection, one Prefect server for the
session's pipeline runs, and the projects the end-to-end tests build on (stages 1-2 done once and copied; stage 3
done once for stage 4's tests and the real engine's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.pdf_host import pdf_host
from harness.prefect_server import PrefectServer
from harness.project import REPO, copy_project, run_pipeline, write_profile
from harness.real_corpus import build_real_corpus
from tasks.sample_corpus import build_corpus

STAGE4_SETTINGS = {"finetuning": {"wandb_enabled": True, "wandb_run_name": "nightly"},
                   "evaluation": {"max_new_tokens": 32}}


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


@pytest.fixture(scope="session", autouse=True)
def prefect_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One Prefect server for the session when it holds end-to-end tests (marker e2e): every pipeline.py they run
    reports to it (PREFECT_API_URL) instead of starting a temporary server of its own (~15 s each on 2 cores).
    The temporary server's path keeps tests of its own (tests/test_cli.py); None when no e2e test was collected."""
    if not any(item.get_closest_marker("e2e") for item in request.session.items):
        yield None
        return
    with PrefectServer(tmp_path_factory.mktemp("prefect")) as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", server.api_url)
        yield server


@pytest.fixture(scope="session")
def chunked_sample(tmp_path_factory: pytest.TempPathFactory, sample_pdf_dir: Path) -> Path:
    """The offline profile's stages 1-2 on the sample corpus, done once: tests take a copy (copy_project) instead of
    collecting and converting it again. Never changed by a test."""
    root = tmp_path_factory.mktemp("chunked")
    write_profile(root, {"data_collector": {"local": {"pdf_dir": str(sample_pdf_dir)}}})
    result = run_pipeline(root / "config.yaml", "--end", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture(scope="session")
def stage3_project(tmp_path_factory: pytest.TempPathFactory, chunked_sample: Path) -> Path:
    """The offline profile through stage 3 (W&B tracking on, offline: the seed's key names), its answers evaluated at
    32 tokens (the profile's 64 doubles every evaluation and every engine test's wait; what differs is only length).
    Stage 4's tests take it from there in order; the engine's tests add stages 4-5 when they run without them."""
    root = copy_project(chunked_sample, tmp_path_factory.mktemp("stage4"), STAGE4_SETTINGS)
    result = run_pipeline(root / "config.yaml", "--stage", "3", env={**os.environ, "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    return root
