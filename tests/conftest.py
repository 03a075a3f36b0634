"""Shared fixtures: the rendered sample corpus, a loopback PDF host with fault injection, one Prefect server for the
session's pipeline runs, and the projects the end-to-end tests build on, each built once on the one before: stages
1-2 (copied by the tests that change it), stage 3, stage 4, stage 5. A test that reads one of them runs alone too:
its fixture builds what it needs.

Under pytest-xdist (scripts/test.sh: a worker per CPU, ``--dist loadfile``) each of them is built once for all
workers (``built_once``: a file lock, the first worker builds, the others wait and read); a test that changes one
works on a copy. Each worker has its own Prefect server and Prefect home."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

# tests that use Prefect in-process start its temporary server: 20 s (Prefect's default) was passed while two suites
# shared the 2 cores (pipeline.py itself gives it 120 s); before prefect is imported, which reads the setting
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers' temporary Prefect servers never share one SQLite file
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"prefect-home-{os.environ['PYTEST_XDIST_WORKER']}-")
    # each worker's processes (training, evaluation, conversion) compute on its share of the CPUs: two of them at
    # once with a thread per CPU each would oversubscribe (4b here, docs/testing.md: a second thread in one process
    # trained ~1.1x as fast, a second process of one thread ~1.8x); vLLM binds threads of its own
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import pytest
from filelock import FileLock

from harness.pdf_host import pdf_host
from harness.prefect_server import PrefectServer
from harness.project import REPO, Ran, copy_project, copy_whole, run_pipeline, write_profile
from harness.real_corpus import build_real_corpus, build_real_pages
from harness.tiny_model import build_tiny_model
from tasks.collect.sample_corpus import build_corpus

STAGE4_SETTINGS = {"finetuning": {"wandb_enabled": True, "wandb_run_name": "nightly",
                                  # 18 steps, not the profile's 30: 4b is ~12 s a step here, and 18 already clear
                                  # the registration gate by a wide interval (10 do, in the whole-pipeline test)
                                  "training": {"max_steps": 18, "save_steps": 6}},
                   "evaluation": {"max_new_tokens": 24}}


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """``name``'s folder, filled by ``build`` once for the whole run: pytest-xdist's workers share the folder above
    their own temporary ones; the first to take the lock builds, the others wait for it. A build that failed is
    started afresh by the next worker that asks."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def sample_pdf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(tmp_path_factory, "sample_pdfs", lambda folder: build_corpus(REPO / "sample_corpus", folder))


# The files that take longest, first (pytest-xdist hands each worker a whole file, in this order, then the rest in
# name order): stage 4's tests build its project (~7 min of training) at the start of the longest chain, which the
# real engines' tests end; the other worker takes the whole pipeline, Prefect's deployments and the images meanwhile.
LONGEST_FIRST = ("test_finetune_e2e.py", "test_pipeline_e2e.py", "test_prefect_server_e2e.py", "test_retraining.py",
                 "test_containers.py", "test_vllm_engine.py", "test_llamacpp.py", "test_real_documents.py",
                 "test_distributed.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny random model of the packaged one's architecture (harness/tiny_model.py), for tests of plumbing; built
    once (scripts/test.sh builds it before the session)."""
    return build_tiny_model()


@pytest.fixture(scope="session")
def real_pdf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's documentation PDFs plus a truncated and an HTML-as-PDF file (harness/real_corpus.py)."""
    return built_once(tmp_path_factory, "real_pdfs", build_real_corpus)


@pytest.fixture(scope="session")
def real_pages_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five pages from each of Debian's three documentation sites plus the bad pages (harness/real_corpus.py)."""
    return built_once(tmp_path_factory, "real_pages", lambda folder: build_real_pages(folder, per_site=5))


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
    def build(root: Path) -> None:
        write_profile(root, {"data_collector": {"local": {"dir": str(sample_pdf_dir)}}})
        result = run_pipeline(root / "config.yaml", "--end", "2")
        assert result.returncode == 0, result.stderr[-3000:]

    return built_once(tmp_path_factory, "chunked", build)


@pytest.fixture(scope="session")
def stage3_project(tmp_path_factory: pytest.TempPathFactory, chunked_sample: Path) -> Path:
    """The offline profile through stage 3 (W&B tracking on, offline: the seed's key names), its answers evaluated at
    24 tokens, as the whole-pipeline test's (the profile's 64 would more than double every evaluation and every
    engine test's wait; what differs is only length),
    training for 18 steps. Never changed by a test: stage 4 trains on a copy (trained_project)."""
    def build(root: Path) -> None:
        copy_project(chunked_sample, root, STAGE4_SETTINGS)
        result = run_pipeline(root / "config.yaml", "--stage", "3", env={**os.environ, "WANDB_MODE": "offline"})
        assert result.returncode == 0, result.stderr[-3000:]

    return built_once(tmp_path_factory, "stage3", build)


def _stage(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """W&B tracking is on in stage 4's project, offline: the runs land in logs/wandb, as `wandb sync` would find them."""
    # stage 4 is ~10 min here alone; a bound for a hung run, not a timing (two suites at once took 15 min)
    result = run_pipeline(root / "config.yaml", *args, env={**os.environ, "WANDB_MODE": "offline"}, timeout=2700)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _built_stage(tmp_path_factory: pytest.TempPathFactory, name: str, prepare: Callable[[Path], object],
                 *args: str) -> Ran:
    """A project made by ``prepare`` and taken through ``pipeline.py ARGS``, once for the whole run (built_once); the
    run's output is kept beside it, for the tests of every worker to read."""
    def build(root: Path) -> None:
        prepare(root)
        result = _stage(root, *args)
        (root / ".stdout").write_text(result.stdout)
        (root / ".stderr").write_text(result.stderr)

    root = built_once(tmp_path_factory, name, build)
    return Ran(root, subprocess.CompletedProcess(args, 0, (root / ".stdout").read_text(), (root / ".stderr").read_text()))


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory, stage3_project: Path) -> Ran:
    """A copy of stage3_project through stage 4, once for the whole run. A checkpoint of some other run is left in
    its folder first, as an earlier night's run would leave it: 4b must not resume from it. Its tests read it (one
    reruns stage 4 there, which must change nothing); a test that changes it works on a whole copy (copy_whole)."""
    def prepare(root: Path) -> None:
        copy_project(stage3_project, root)
        (root / "models/checkpoints/checkpoint-1").mkdir(parents=True)

    return _built_stage(tmp_path_factory, "stage4", prepare, "--stage", "4")


@pytest.fixture(scope="session")
def registered_project(tmp_path_factory: pytest.TempPathFactory, trained_project: Ran) -> Ran:
    """A whole copy of trained_project with its adapter registered (stage 5), once for the whole run; the engine's
    tests, which register and roll out versions of their own, work on a copy of it."""
    return _built_stage(tmp_path_factory, "stage5", lambda root: copy_whole(trained_project.root, root), "--stage", "5")
