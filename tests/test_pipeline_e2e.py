"""The whole local pipeline end to end through the CLI, as a user runs it: real PDFs, a misbehaving web host, a rerun."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.loopback import free_port
from harness.project import NO_EXPORTS, qa_dataset, run_pipeline, write_profile

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NOISE = ["Traceback", "Error flushing", "CancelledError", "EventsWorker", "Still processing items",
         # other libraries' output: tqdm bars (GGUF conversion, the trainer), the trainer's loss dicts, warnings
         "it/s]", "Converting and de-quantizing", "{'loss'", "Warning", "wandb:",
         "| WARNING |"]  # a library's log line (docling's about a document it could not read): the stage says why
SCREEN = 24  # lines: a whole local run's output fits one terminal screen


@pytest.fixture
def project(tmp_path: Path, sample_pdf_dir: Path, pdf_server) -> Path:
    shutil.copytree(sample_pdf_dir, tmp_path / "pdfs")
    names = sorted(p.name for p in sample_pdf_dir.glob("*.pdf"))
    urls = [f"{pdf_server.url}/pdf/{names[0]}",   # same content as a local file: collapses
            f"{pdf_server.url}/html.pdf", f"{pdf_server.url}/status/404.pdf",
            f"{pdf_server.url}/truncated.pdf", f"{pdf_server.url}/flaky-500.pdf"]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    write_profile(tmp_path, {
        "data_collector": {"local": {"dir": "pdfs", "url_file": "urls.txt"}, "allow_private_addresses": True,
                           "backoff_base_s": 0.05},
        # no gateway runs there (whatever listens on this machine's :8000 is not this test's business)
        "serving": {"gateway_url": f"http://127.0.0.1:{free_port()}", "backend": "local"},
        # stage 4 in brief (2 checkpoints, 24-token answers): here the subject is the stages' wiring; training and
        # its numbers at the profile's full settings are tests/test_finetune_e2e.py's
        "finetuning": {"training": {"max_steps": 10, "save_steps": 5}}, "evaluation": {"max_new_tokens": 24},
        # stage 5's exports (and the llama.cpp backend serving them) are the registered project's
        # (tests/test_llamacpp.py): here, the stages' wiring
        "registration": {"exports": NO_EXPORTS}})
    return tmp_path


def test_collect_and_process_then_rerun_does_nothing_new(project: Path, pdf_server):
    n = len(list((project / "pdfs").glob("*.pdf")))  # the sample documents
    first = run_pipeline(project / "config.yaml")
    output = first.stdout + first.stderr
    assert first.returncode == 0, output
    assert not [n for n in NOISE if n in output], output
    assert len(output.strip().splitlines()) <= SCREEN, output

    records = json.loads((project / "data/raw/metadata.json").read_text())
    assert len(records) == n + 5  # the local files + 5 URLs: every source tried is recorded
    assert sum(d["source"] == "local" for d in records) == n
    metadata = {d["url"].rsplit("/", 1)[-1]: d for d in records if d["source"] == "url_list"}
    assert {k: metadata[k]["status"] for k in ["html.pdf", "404.pdf", "truncated.pdf", "flaky-500.pdf"]} == {
        "html.pdf": "not_pdf", "404.pdf": "http_error", "truncated.pdf": "ok", "flaky-500.pdf": "ok"}
    ok_shas = {d["sha256"] for d in records if d["status"] == "ok"}
    assert sorted(p.stem for p in (project / "data/raw").glob("*.pdf")) == sorted(ok_shas)
    assert len(ok_shas) == n + 1  # the sample PDFs (one also fetched by URL, twice via flaky) + the truncated one

    manifest = {c["sha256"]: c for c in json.loads((project / "data/processed/manifest.json").read_text())}
    truncated = metadata["truncated.pdf"]["sha256"]
    assert manifest[truncated]["status"] == "failed" and manifest[truncated]["error"]
    converted = [sha for sha, c in manifest.items() if c["status"] == "ok"]
    assert len(converted) == n and all(manifest[sha]["heading_source"] == "outline" for sha in converted)
    assert all(re.search(r"(?m)^# 1 ", (project / "data/processed" / f"{sha}.md").read_text()) for sha in converted)

    chunks = json.loads((project / "data/chunks/chunks.json").read_text())
    assert len(chunks) >= 15
    assert all(20 <= c["tokens"] <= 500 and c["doc_sha256"] in converted and c["section_path"] for c in chunks)
    assert len({c["id"] for c in chunks}) == len(chunks)
    assert f"process: {n + 1} documents, {n} converted, 1 failed" in first.stdout
    assert f"process: skipped {truncated[:12]} " in first.stdout and " at conversion: " in first.stdout

    # stage 4 chose on validation questions and reported on test questions, never the same ones
    split = qa_dataset(project / "data/qa_dataset")
    validation, test = {r["id"] for r in split["validation"]}, {r["id"] for r in split["test"]}
    assert validation and test and not validation & test
    selection = json.loads((project / "reports/checkpoint_selection.json").read_text())
    assert selection["split"] == "validation" and selection["eval_examples"] == selection["validation_total"] == len(validation)
    for report in ("eval_baseline.json", "eval_finetuned.json"):
        assert {p["id"] for p in json.loads((project / "reports" / report).read_text())["predictions"]} == test
    summary = json.loads((project / "reports/comparison.json").read_text())
    assert f"4d: {summary['headline']}" in first.stdout and "95 % CI" in summary["headline"]
    assert summary["headline"] in (project / "reports/index.html").read_text()
    registration = json.loads((project / "reports/registration.json").read_text())
    assert registration["status"] == "registered" and registration["promotion"]["rule"] == "ci"

    hits_before = len(pdf_server.hits)
    stamps = {p: p.stat().st_mtime_ns for p in (project / "data/processed").glob("*.md")}
    second = run_pipeline(project / "config.yaml")
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(pdf_server.hits) == hits_before  # nothing downloaded again, failures included
    assert f"{n + 5} settled earlier (not fetched again)" in second.stdout
    assert f"{n + 1} already done" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in (project / "data/processed").glob("*.md")} == stamps
    assert json.loads((project / "data/chunks/chunks.json").read_text()) == chunks


def test_stage_two_alone_without_stage_one_says_what_to_do(tmp_path: Path):
    result = run_pipeline(write_profile(tmp_path), "--stage", "2")
    assert result.returncode == 1  # the configuration is fine; an earlier stage's output is missing
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: stage 2 needs {tmp_path / 'data/raw' / '*.pdf'}: run stage 1 first "
        "(python pipeline.py --stage 1, or a range that includes it)")
