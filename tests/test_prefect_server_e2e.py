"""Deployed for real: a Prefect server, a process worker, `prefect deploy` from prefect.yaml, a provider outage
in stage 3, `prefect flow-run retry` — and the retry repeats no finished download, conversion or LLM call.
What the UI shows is read from the same API it reads: the run's summary artifact, the failed task, the logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from harness import tiny_model as tiny
from harness.llm import LLMFaults, fake_llm
from harness.prefect_server import POLLING_WORKER, PrefectServer
from harness.project import REPO, copy_project, run_pipeline, write_profile

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "prefect-e2e-gemini-key"


def prefect(server: PrefectServer, *args: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=REPO, env=server.env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"prefect {' '.join(args)}: {result.stdout[-2000:]} {result.stderr[-2000:]}"
    return result


def flow_run(server: PrefectServer, run_id: str) -> dict:
    return httpx.get(f"{server.api_url}/flow_runs/{run_id}", timeout=10).json()


def api(server: PrefectServer, what: str, query: dict) -> list[dict]:
    return httpx.post(f"{server.api_url}/{what}/filter", json=query, timeout=10).json()


def logged(server: PrefectServer, query: dict, keep, timeout_s: float = 30) -> list[str]:
    """The messages of the logs ``query`` finds that ``keep`` accepts, waited for up to ``timeout_s``: a run's logs
    reach the server in batches, after its state."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [log["message"] for log in api(server, "logs", query) if keep(log["message"])]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def summary_artifact(server: PrefectServer, run_id: str) -> str:
    """The newest pipeline summary on the deployment's own run (the run a user opens in the UI)."""
    found = api(server, "artifacts", {"artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": ["pipeline-summary"]}},
                                      "sort": "CREATED_DESC"})
    assert found, "the deployment's run has no pipeline-summary artifact"
    return found[0]["data"]


def wait_for(server: PrefectServer, run_id: str, states: set[str], timeout_s: float = 420) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = flow_run(server, run_id)
        if run["state_type"] in states:
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} still {run['state_type']} after {timeout_s} s")


def test_a_run_failed_in_stage_3_retried_from_prefect_repeats_no_finished_work(tmp_path, sample_pdf_dir):
    faults = LLMFaults()
    with PrefectServer(tmp_path / "prefect") as server, fake_llm("gemini", KEY, faults=faults) as llm:
        config = write_profile(tmp_path, {
            "data_collector": {"local": {"dir": str(sample_pdf_dir)}},
            "dataset_generator": {"provider": "gemini", "base_url": llm.url, "max_tokens": 150, "max_concurrent_requests": 1,
                                  "max_retries": 1, "backoff_base_s": 0.05}})
        prefect(server, "work-pool", "create", "local-process", "--type", "process")
        prefect(server, "deploy", "--name", "local")
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "local-process"],
                                  cwd=REPO, env={**server.env, **POLLING_WORKER, "GEMINI_API_KEY": KEY},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            def outage_after_some_groups() -> None:  # the provider goes down once a few groups are done
                deadline = time.monotonic() + 300
                while len(llm.prompts) < 4 and time.monotonic() < deadline:
                    time.sleep(0.05)
                faults.outage = True

            threading.Thread(target=outage_after_some_groups, daemon=True).start()
            started = prefect(server, "deployment", "run", "run-pipeline/local", "--param", f"config={config}",
                              "--param", 'end="3"')
            run_id = next(line.split()[-1] for line in started.stdout.splitlines() if "UUID" in line)
            failed = wait_for(server, run_id, {"FAILED", "CRASHED", "COMPLETED"})
            assert failed["state_type"] == "FAILED", failed["state"]
            cache = tmp_path / "data/qa_dataset/cache"
            done_before = {p.name for p in cache.glob("*.json")}
            prompts_before = len(llm.prompts)
            downloaded = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data/raw").glob("*.pdf")}
            converted = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data/processed").glob("*.md")}
            assert done_before and downloaded and converted

            summary = summary_artifact(server, run_id)
            assert "**Stage 3 failed**" in summary and "- **1 collect** completed: collect: " in summary
            assert "- **2 process** completed: process: " in summary and "- **3 generate** failed: StageIncomplete: " in summary
            assert "| 3 generate | failed | " in summary
            assert "baseline-eval" not in summary  # end=3: the stages after 3 were never part of this run
            # the task whose groups failed is Failed, with the counts; the failure is logged once, without a traceback
            groups_task = api(server, "task_runs", {"task_runs": {"name": {"like_": "generate-qa-groups"}}})
            assert [t["state_type"] for t in groups_task] == ["FAILED"]
            assert "groups failed on transient provider errors" in groups_task[0]["state"]["message"]
            errors_query = {"logs": {"level": {"ge_": 40}}, "limit": 200}
            failure = logged(server, errors_query, lambda message: "groups failed on transient" in message
                             and not message.startswith("Finished in state"))
            errors = api(server, "logs", errors_query)
            assert len(failure) == 1 and failure[0].startswith("StageIncomplete: "), failure
            assert not [e for e in errors if "Traceback" in e["message"]]
            traceback = api(server, "logs", {"logs": {"level": {"le_": 10}}, "limit": 200})
            assert any("Traceback" in e["message"] or e["message"].startswith("traceback of StageIncomplete")
                       for e in traceback)

            faults.outage = False
            prefect(server, "flow-run", "retry", run_id)
            finished = wait_for(server, run_id, {"COMPLETED", "FAILED", "CRASHED"})
            assert finished["state_type"] == "COMPLETED", finished["state"]
            retry_prompts = llm.prompts[prompts_before:]
            assert "**Every stage completed.**" in summary_artifact(server, run_id)
            stage_3 = api(server, "artifacts", {"artifacts": {"key": {"any_": ["generate-summary"]}}, "sort": "CREATED_DESC"})
            rows = {row["metric"]: row["value"] for row in json.loads(stage_3[0]["data"])}
            assert rows["split.level"] == "document" and rows["duplicates.exact"] >= 0  # nested values, one row each
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)

    stats = json.loads((tmp_path / "data/qa_dataset/stats.json").read_text())
    assert stats["groups_cached_before_run"] == len(done_before)
    # each unfinished group asked once (a reply with no usable pair is asked again with a repair note: not a repeat)
    first_asks = [p for p in retry_prompts if "Your previous reply could not be used" not in p]
    assert len(first_asks) == stats["groups"] - len(done_before) == len(set(first_asks))
    # nothing downloaded or converted again
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data/raw").glob("*.pdf")} == downloaded
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data/processed").glob("*.md")} == converted
    assert (tmp_path / "data/qa_dataset/train.json").is_file()


def test_stage_4_is_dispatched_to_the_training_deployment(tmp_path, chunked_sample, tiny_model, prefect_server):
    """On the session's server (the pool and deployment made here are this test's alone); the tiny model answers."""
    server = prefect_server
    prefect(server, "work-pool", "create", "train-pool", "--type", "process")
    prefect(server, "deploy", "flows/deployments.py:fine_tune", "--name", "cpu", "--pool", "train-pool")
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "train-pool"],
                              cwd=REPO, env={**server.env, **POLLING_WORKER}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        root = copy_project(chunked_sample, tmp_path, {"orchestration": {"train_deployment": "fine-tune/cpu"},
                                                       "evaluation": {"max_new_tokens": 8},  # the dispatch is the subject
                                                       **tiny.settings(tiny_model)})
        config = root / "config.yaml"
        for stage in ("3", "4a"):
            result = run_pipeline(config, "--stage", stage, env=server.env, timeout=420)
            assert result.returncode == 0, result.stderr[-3000:]
        runs = httpx.post(f"{server.api_url}/flow_runs/filter", json={
            "deployments": {"name": {"any_": ["cpu"]}}}, timeout=10).json()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    assert [run["state_type"] for run in runs] == ["COMPLETED"]
    assert runs[0]["parameters"] == {"config": str(config), "start": "4a", "end": "4a"}
    report = json.loads((tmp_path / "reports/eval_baseline.json").read_text())  # written by the deployment's run
    assert report["examples"] > 0 and report["adapter"] is None
