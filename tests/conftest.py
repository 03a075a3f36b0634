"""Shared fixtures: the rendered sample corpus, a loopback PDF host with fault injection, one Prefect server for the
session's pipeline runs, and the projects the end-to-end tests build on, each built once on the one before: stages
1-2 (copied by the tests that change it), stage 3, stage 4, stage 5. A test that reads one of them runs alone too:
its fixture builds what it needs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# tests that use Prefect in-process start its temporary server: 20 s (Prefect's default) was passed while two suites
# shared the 2 cores (pipeline.py itself gives it 120 s); before prefect is imported, which reads the setting
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import pytest

from harness.pdf_host import pdf_host
from harness.prefect_server import PrefectServer
from harness.project import REPO, Ran, copy_project, run_pipeline, write_profile
from harness.real_corpus import build_real_corpus, build_real_pages
from harness.tiny_model import build_tiny_model
from tasks.collect.sample_corpus import build_corpus

STAGE4_SETTINGS = {"finetuning": {"wandb_enabled": True, "wandb_run_name": "nightly",
                                  # 18 steps, not the profile's 30: 4b is ~12 s a step here, and 18 already clear
                                  # the registration gate by a wide interval (10 do, in the whole-pipeline test)
                                  "training": {"max_steps": 18, "save_steps": 6}},
                   "evaluation": {"max_new_tokens": 32}}


@pytest.fixture(scope="session")
def sample_pdf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sample_pdfs")
    build_corpus(REPO / "sample_corpus", folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny random model of the packaged one's architecture (harness/tiny_model.py), for tests of plumbing; built
    once (scripts/test.sh builds it before the session)."""
    return build_tiny_model()


@pytest.fixture(scope="session")
def real_pdf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's documentation PDFs plus a truncated and an HTML-as-PDF file (harness/real_corpus.py)."""
    folder = tmp_path_factory.mktemp("real_pdfs")
    build_real_corpus(folder)
    return folder


@pytest.fixture(scope="session")
def real_pages_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five pages from each of Debian's three documentation sites plus the bad pages (harness/real_corpus.py)."""
    folder = tmp_path_factory.mktemp("real_pages")
    build_real_pages(folder, per_site=5)
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
    write_profile(root, {"data_collector": {"local": {"dir": str(sample_pdf_dir)}}})
    result = run_pipeline(root / "config.yaml", "--end", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture(scope="session")
def stage3_project(tmp_path_factory: pytest.TempPathFactory, chunked_sample: Path) -> Path:
    """The offline profile through stage 3 (W&B tracking on, offline: the seed's key names), its answers evaluated at
    32 tokens (the profile's 64 doubles every evaluation and every engine test's wait; what differs is only length),
    training for 18 steps.
    Stage 4's tests take it from there in order; the engine's tests add stages 4-5 when they run without them."""
    root = copy_project(chunked_sample, tmp_path_factory.mktemp("stage4"), STAGE4_SETTINGS)
    result = run_pipeline(root / "config.yaml", "--stage", "3", env={**os.environ, "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def _stage(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """W&B tracking is on in stage 4's project, offline: the runs land in logs/wandb, as `wandb sync` would find them."""
    # stage 4 is ~10 min here alone; a bound for a hung run, not a timing (two suites at once took 15 min)
    result = run_pipeline(root / "config.yaml", *args, env={**os.environ, "WANDB_MODE": "offline"}, timeout=2700)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def trained_project(stage3_project: Path) -> Ran:
    """stage3_project through stage 4, once. A checkpoint of some other run is left in its folder first, as an
    earlier night's run would leave it: 4b must not resume from it."""
    stale = stage3_project / "models/checkpoints/checkpoint-1"
    stale.mkdir(parents=True, exist_ok=True)
    return Ran(stage3_project, _stage(stage3_project, "--stage", "4"))


@pytest.fixture(scope="session")
def registered_project(trained_project: Ran) -> Ran:
    """trained_project with its adapter registered (stage 5), once."""
    return Ran(trained_project.root, _stage(trained_project.root, "--stage", "5"))
