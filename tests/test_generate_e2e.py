"""Stage 3 through the CLI with the real Gemini client: a process killed mid-stage loses and repeats nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.llm import fake_llm
from harness.project import REPO, copy_project, qa_dataset, run_pipeline, write_profile
from tasks.llm.offline import MODEL_NAME

KEY = "e2e-gemini-key"


pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def chunked(tmp_path_factory, chunked_sample) -> Path:
    """A project folder with stages 1-2 done on the sample corpus (small groups: many LLM calls)."""
    return copy_project(chunked_sample, tmp_path_factory.mktemp("stage3"), {"dataset_generator": {"max_tokens": 150}})


def gemini_config(root: Path, url: str, name: str) -> Path:
    return write_profile(root, {"dataset_generator": {"provider": "gemini", "base_url": url, "max_concurrent_requests": 2,
                                                      "requests_per_minute": 6000, "backoff_base_s": 0.05}},
                         name=name, inherit="config.yaml")


def run_stage3(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "GEMINI_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(REPO / "pipeline.py"), "--config", str(config), "--stage", "3", *extra]
    # its own process group, so a kill takes the whole run down (Prefect's temporary API server included)
    return subprocess.Popen(command, cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_offline_stage_three_writes_a_complete_dataset(chunked: Path):
    result = run_pipeline(chunked / "config.yaml", "--stage", "3", timeout=300)
    assert result.returncode == 0, result.stderr
    out = chunked / "data/qa_dataset"
    stats = json.loads((out / "stats.json").read_text())
    split = qa_dataset(out)
    train, records = split["train"], [r for side in split.values() for r in side]
    assert stats["provider"] == "offline" and stats["offline_extractive"] is True
    assert stats["pairs"] == len(records) >= 20 and all(split.values())
    assert stats["split"]["level"] == "document"
    docs = {side: {r["doc_sha256"] for r in side_records} for side, side_records in split.items()}
    assert not (docs["train"] & docs["validation"] or docs["train"] & docs["test"] or docs["validation"] & docs["test"])
    assert [stats["split"][f"{side}_pairs"] for side in split] == [len(side_records) for side_records in split.values()]
    assert not (out / "eval.json").exists()
    fields = {"id", "question", "answer", "type", "chunk_ids", "doc_sha256", "url", "provider", "model", "prompt_version"}
    assert all(fields <= set(r) and r["model"] == MODEL_NAME and r["url"].startswith("file://") for r in train)
    chat = [json.loads(line) for line in (out / "train_chat.jsonl").read_text().splitlines()]
    assert len(chat) == len(train) and chat[0]["messages"][2]["content"] == train[0]["answer"]
    assert {"what", "explain"} <= set(stats["by_type"]) <= {"what", "why", "how", "compare", "explain"}
    assert all(r["question"].endswith("?") for r in records)


def test_preview_prints_pairs_and_cost_and_writes_no_dataset(chunked: Path):
    out = chunked / "data/qa_dataset"
    names = ("train.json", "validation.json", "test.json", "stats.json")
    before = {name: (out / name).read_bytes() for name in names if (out / name).exists()}
    with fake_llm("gemini", KEY) as server:
        process = run_stage3(gemini_config(chunked, server.url, "preview.yaml"), "--preview")
        stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "Q: " in stdout and "full run estimate" in stdout and "$" in stdout
    assert len(server.prompts) == 3  # preview_groups
    assert {name: (out / name).read_bytes() for name in before} == before


def test_killed_mid_stage_then_rerun_repeats_no_finished_call(chunked: Path):
    with fake_llm("gemini", KEY, latency_s=0.4) as server:
        config = gemini_config(chunked, server.url, "gemini.yaml")
        process = run_stage3(config)
        deadline = time.monotonic() + 120
        while len(server.prompts) < 6 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)  # the machine goes down: the CLI and everything it started
        process.wait(timeout=30)
        time.sleep(0.5)  # let in-flight requests finish on the server side
        cache = chunked / "data/qa_dataset/cache"
        done_before = {p.name for p in cache.glob("*.json") if json.loads(p.read_text())["provider"] == "gemini"}
        prompts_before = len(server.prompts)
        assert len(done_before) > 0

        rerun = run_stage3(config)
        _, stderr = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, stderr
        rerun_prompts = server.prompts[prompts_before:]

    stats = json.loads((chunked / "data/qa_dataset/stats.json").read_text())
    # every group finished before the kill comes from the cache; only the others are asked, each once
    # (a group whose reply holds no usable pair is asked once more, with a repair note: that is not a repeat)
    assert stats["provider"] == "gemini" and stats["groups_cached_before_run"] == len(done_before)
    first_asks = [p for p in rerun_prompts if "Your previous reply could not be used" not in p]
    assert stats["provider_calls_this_run"] == len(rerun_prompts)
    assert len(first_asks) == len(set(first_asks)) == stats["groups"] - len(done_before)
    records = [r for side in qa_dataset(chunked / "data/qa_dataset").values() for r in side]
    assert len({r["id"] for r in records}) == len(records)
    assert stats["pairs"] == len(records) > 0


def test_a_refresh_with_a_new_document_keeps_every_earlier_document_on_its_side(tmp_path, sample_pdf_dir):
    """The nightly refresh: only the new document's groups are asked for, and no test question becomes training data."""
    pdfs = sorted(sample_pdf_dir.glob("*.pdf"))
    (tmp_path / "pdfs").mkdir()
    for pdf in pdfs[:2]:
        (tmp_path / "pdfs" / pdf.name).write_bytes(pdf.read_bytes())
    write_profile(tmp_path, {"data_collector": {"local": {"dir": "pdfs"}}})

    def refresh() -> tuple[dict[str, str], dict, dict[str, list[dict]]]:
        result = run_pipeline(tmp_path / "config.yaml", "--end", "3", timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        out = tmp_path / "data/qa_dataset"
        return json.loads((out / "split.json").read_text()), json.loads((out / "stats.json").read_text()), qa_dataset(out)

    before, first, first_split = refresh()
    assert sorted(before.values()) == ["held-out", "train"]  # two documents: one trains, one is held out
    for pdf in pdfs[2:5]:
        (tmp_path / "pdfs" / pdf.name).write_bytes(pdf.read_bytes())
    after, second, second_split = refresh()
    assert len(after) == 5 and {doc: after[doc] for doc in before} == before
    for side in ("train", "validation", "test"):
        assert {r["id"] for r in first_split[side]} <= {r["id"] for r in second_split[side]}
    assert not {r["doc_sha256"] for r in second_split["train"]} & {r["doc_sha256"] for r in second_split["test"]}
    assert second["groups_cached_before_run"] == first["groups"]
    assert second["provider_calls_this_run"] == second["groups"] - first["groups"] > 0
