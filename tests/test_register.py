"""Stage 5: versions, the vLLM servability check, the local registry and the Hub (a loopback server speaking its API)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from core.naming import next_version_name
from core.results import EvaluationReport
from harness.hub import FakeHub
from harness.project import NO_EXPORTS, run_pipeline, write_profile
from tasks.finetune.comparison import against_version, summarise
from tasks.release.adapter_check import AdapterNotServable, check_servable
from tasks.release.promotion import promotion_check

pytestmark = pytest.mark.e2e

METRICS = {"rouge_1": 0.3, "rouge_2": 0.2, "rouge_l": 0.3, "bertscore_f1": 0.5, "token_f1": 0.3, "combined": 0.38}
WEIGHTS = {"bertscore_f1": 0.4, "rouge_l": 0.3, "token_f1": 0.2, "rouge_1": 0.1}


def save_adapter(folder: Path, seed: int = 0, **lora) -> Path:
    """A real PEFT LoRA adapter of a tiny random Llama (no download)."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    settings = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                "init_lora_weights": False, **lora}
    get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **settings)).save_pretrained(folder)
    return folder


def test_versions_start_at_one_and_bump_minor_or_major():
    stem = "pregnancy-qa-lora"
    assert next_version_name([], stem, "minor") == "pregnancy-qa-lora-v1.0"
    existing = ["pregnancy-qa-lora-v1.0", "pregnancy-qa-lora-v1.9", "pregnancy-qa-lora-v1.10", "cardio-qa-lora-v7.0",
                "pregnancy-qa-lora-v1.2-draft"]
    assert next_version_name(existing, stem, "minor") == "pregnancy-qa-lora-v1.11"
    assert next_version_name(existing, stem, "major") == "pregnancy-qa-lora-v2.0"


def test_a_plain_lora_on_attention_projections_is_servable(tmp_path):
    check_servable(save_adapter(tmp_path / "ok"), max_lora_rank=64)


@pytest.mark.parametrize("lora, max_rank, reason", [
    ({"modules_to_save": ["lm_head"]}, 64, "modules_to_save=['lm_head']"),
    ({"r": 32}, 16, "rank 32 is above serving.max_lora_rank=16"),
    ({"use_dora": True}, 64, "use_dora=true"),
    ({"target_modules": ["q_proj", "embed_tokens"]}, 64, "target_modules ['embed_tokens'] are not served"),
])
def test_adapters_vllm_would_reject_are_refused_with_the_reason(tmp_path, lora, max_rank, reason):
    adapter = save_adapter(tmp_path / "bad", **lora)
    with pytest.raises(AdapterNotServable, match="cannot be served by vLLM") as refused:
        check_servable(adapter, max_lora_rank=max_rank)
    assert reason in str(refused.value)


SETTINGS = {"max_new_tokens": 64, "batch_size": 8, "bertscore_model": "bertscore", "system_prompt": ""}
CLEAR_GAIN = [0.05, 0.04, 0.06, 0.05, 0.03, 0.07, 0.05, 0.04]


def stage_four_reports(deltas: list[float]) -> dict:
    """The 4d summary (tasks.finetune.comparison) of a fine-tuned model that changes each question's scores by ``deltas``."""
    def report(shift: list[float]) -> EvaluationReport:
        return EvaluationReport.model_validate({
            "model": "base", "adapter": None, "examples": len(deltas), "weights": WEIGHTS, "split": "test",
            "metrics": METRICS, "settings": SETTINGS, "predictions": [
                {"id": f"q{i}", "question": f"Question {i}?", "reference": "Reference.", "prediction": f"Answer {i} {d}.",
                 "scores": {name: value + d for name, value in METRICS.items()}} for i, d in enumerate(shift)]})

    return summarise(report([0.0] * len(deltas)), report(deltas), documents=2, resamples=2000, seed=1, confidence=0.95)


def make_project(root: Path, registration: dict, seed: int = 0, deltas: list[float] = CLEAR_GAIN) -> Path:
    """Stage 4's outputs as stage 5 reads them: the installed adapter, the comparison, the dataset stats."""
    save_adapter(root / "models" / "lora_weights", seed=seed)
    reports = root / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "comparison.json").write_text(json.dumps(stage_four_reports(deltas)))
    (reports / "checkpoint_selection.json").write_text(json.dumps({
        "selected": "checkpoint-30", "scores": {"checkpoint-30": 0.38}, "metric": "combined", "split": "validation",
        "eval_examples": 6, "answers_changed_vs_base": 5, "adapter_sha256": {}}))
    (root / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)  # 4b's record of what it trained on
    (root / "models" / "checkpoints" / "run.json").write_text(json.dumps({
        "fingerprint": "f" * 64, "base": "models/base", "completed": True, "train_pairs": 15, "test_fingerprint": "t" * 64}))
    (root / "data" / "qa_dataset").mkdir(parents=True, exist_ok=True)
    (root / "data" / "qa_dataset" / "stats.json").write_text(json.dumps({
        "provider": "offline", "model": "offline-extractive", "prompt_version": "v3",
        "split": {"train_pairs": 15, "validation_pairs": 6, "test_pairs": 8}, "source_documents": ["a" * 64]}))
    (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (root / "data" / "raw" / "metadata.json").write_text(json.dumps([
        {"url": "https://example.org/guide.pdf", "title": "Prenatal guide", "sha256": "a" * 64, "status": "ok"}]))
    # exports, and llama.cpp serving them: tests/test_llamacpp.py
    write_profile(root, {"registration": {"exports": NO_EXPORTS, **registration}, "serving": {"backend": "local"}})
    return root


def register(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_USERNAME")}
    return run_pipeline(root / "config.yaml", "--stage", "5", env={**clean, **env}, timeout=300)


def test_local_registry_versions_cards_and_recognises_unchanged_weights(tmp_path):
    root = make_project(tmp_path, {"target": "local"})
    first = register(root)
    assert first.returncode == 0, first.stderr
    version = root / "models" / "registry" / "pregnancy-qa-lora-v1.0"
    assert sorted(p.name for p in version.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    card = ModelCard.load(version / "README.md")
    assert card.data.library_name == "peft" and card.data.license == "apache-2.0" and "pregnancy" in card.data.tags
    summary = json.loads((root / "reports" / "comparison.json").read_text())
    assert summary["headline"] in card.text
    assert "| metric | baseline | fine-tuned | change | 95 % CI | p | verdict |" in card.text
    combined = summary["metrics"]["combined"]
    assert (f"| combined | 0.3800 | {combined['after']:.4f} | {combined['delta']:+.4f} | {combined['low']:+.4f} … "
            f"{combined['high']:+.4f} | {combined['p_value']:.3g} | better |") in card.text
    assert combined["low"] > 0 and combined["delta"] == pytest.approx(sum(CLEAR_GAIN) / len(CLEAR_GAIN))
    assert "checkpoint-30 chosen on 6 validation questions" in card.text
    assert "[Prenatal guide](https://example.org/guide.pdf)" in card.text
    record = json.loads((root / "reports" / "registration.json").read_text())
    assert record["status"] == "registered" and record["name"] == "pregnancy-qa-lora-v1.0"

    again = register(root)
    assert again.returncode == 0 and "already registered as pregnancy-qa-lora-v1.0: no new version" in again.stdout
    assert sorted(p.name for p in version.parent.iterdir()) == ["pregnancy-qa-lora-v1.0"]
    assert json.loads((root / "reports" / "registration.json").read_text())["status"] == "unchanged"

    save_adapter(root / "models" / "lora_weights", seed=1)  # retrained: new weights
    assert register(root).returncode == 0
    make_project(root, {"target": "local", "version_bump": "major"}, seed=2)
    assert register(root).returncode == 0
    assert sorted(p.name for p in version.parent.iterdir()) == [
        "pregnancy-qa-lora-v1.0", "pregnancy-qa-lora-v1.1", "pregnancy-qa-lora-v2.0"]
    # each version names the one it follows and the training run it came from, on its card and in the record
    lineage = json.loads((root / "reports" / "registration.json").read_text())["lineage"]
    assert lineage["previous_version"] == "pregnancy-qa-lora-v1.1" and lineage["train_pairs"] == 15
    assert (f"Follows `pregnancy-qa-lora-v1.1`; training run `{'f' * 12}` on 15 training pairs, test set `{'t' * 12}`."
            in (version.parent / "pregnancy-qa-lora-v2.0" / "README.md").read_text())
    assert "Follows no earlier version" in (version / "README.md").read_text()


@pytest.mark.parametrize(("rule", "deltas", "registered"), [
    ("ci", CLEAR_GAIN, True),
    ("ci", [0.2, -0.1, 0.15, -0.12, 0.1, -0.1, 0.05, -0.02], False),  # up on average, interval across 0
    ("mean", [0.2, -0.1, 0.15, -0.12, 0.1, -0.1, 0.05, -0.02], True),
    ("mean", [-0.05, 0.01, -0.02, 0.0, -0.03, 0.02, -0.04, -0.01], False),  # down on average
    ("none", [-0.05, 0.01, -0.02, 0.0, -0.03, 0.02, -0.04, -0.01], True),
])
def test_the_promotion_gate_decides_registration(tmp_path, rule, deltas, registered):
    root = make_project(tmp_path, {"target": "local", "require_improvement": rule}, deltas=deltas)
    result = register(root)
    summary = json.loads((root / "reports" / "comparison.json").read_text())
    if registered:
        assert result.returncode == 0, result.stderr
        record = json.loads((root / "reports" / "registration.json").read_text())
        assert record["status"] == "registered" and record["promotion"] == {"rule": rule, "headline": summary["headline"]}
        return
    assert result.returncode == 1
    refusal = result.stderr.strip().splitlines()[-1]
    assert refusal.startswith(f"error: registration.require_improvement: {rule} needs")
    assert summary["headline"] in refusal and "Nothing registered" in refusal  # the numbers it was refused on
    assert not (root / "models" / "registry").exists() and not (root / "reports" / "registration.json").exists()


@pytest.mark.parametrize(("rule", "shift", "refused"), [
    ("ci", [0.0] * 8, True),  # no better than the version serving now: it keeps serving
    ("ci", [0.03, 0.05, 0.04, 0.06, 0.02, 0.05, 0.04, 0.03], False),
    ("mean", [0.01, -0.01, 0.0, 0.0, 0.0, 0.0, 0.0, -0.005], True),
    ("none", [-0.05] * 8, False),
])
def test_a_retrained_candidate_is_held_to_the_version_serving_now(rule, shift, refused):
    """Better than the base model is not enough on a rerun: 4d's ``vs_previous`` (the candidate against the version
    it would replace, on the same test questions) passes the same rule, or nothing is registered."""
    def report(scores: list[float]) -> EvaluationReport:
        return EvaluationReport.model_validate({
            "model": "base", "adapter": "a", "examples": 8, "weights": WEIGHTS, "metrics": METRICS, "settings": SETTINGS,
            "predictions": [{"id": f"q{i}", "question": "Q?", "reference": "R.", "prediction": f"A{i}",
                             "scores": {"combined": score}} for i, score in enumerate(scores)]})

    summary = stage_four_reports(CLEAR_GAIN)
    previous = [0.40, 0.42, 0.38, 0.41, 0.39, 0.40, 0.43, 0.37]
    summary["vs_previous"] = against_version("pregnancy-qa-lora-v1.0", report(previous),
                                             report([p + d for p, d in zip(previous, shift, strict=True)]), 2000, 1, 0.95)
    why = promotion_check(rule, summary)
    assert (why is not None) == refused
    if refused:
        assert "the one serving now (pregnancy-qa-lora-v1.0)" in why and "pregnancy-qa-lora-v1.0 keeps serving" in why
        assert summary["vs_previous"]["headline"].removeprefix("against ") in why  # the numbers it was refused on


def test_an_adapter_serving_would_reject_is_not_published(tmp_path):
    root = make_project(tmp_path, {"target": "local"})
    save_adapter(root / "models" / "lora_weights", modules_to_save=["lm_head"])
    result = register(root)
    assert result.returncode == 1
    assert "cannot be served by vLLM: modules_to_save=['lm_head']" in result.stderr
    assert not (root / "models" / "registry").exists()


def test_hub_registration_through_the_hub_api(tmp_path):
    with FakeHub(token="hf_secret_token") as hub:
        root = make_project(tmp_path, {"target": "hub", "hub_url": hub.url, "repo_name": "prenatal-assistant"})
        missing = register(root, HF_USERNAME="alice")
        assert missing.returncode == 2 and "HF_TOKEN is not set" in missing.stderr and not hub.repos

        first = register(root, HF_TOKEN="hf_secret_token", HF_USERNAME="alice")
        assert first.returncode == 0, first.stderr
        repo = hub.repos["alice/prenatal-assistant-v1.0"]
        assert repo["private"] is True and len(repo["commits"]) == 1
        assert sorted(repo["files"]) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
        assert repo["files"]["adapter_model.safetensors"] == (root / "models/lora_weights/adapter_model.safetensors").read_bytes()
        record = json.loads((root / "reports" / "registration.json").read_text())
        assert record["location"] == f"{hub.url}/alice/prenatal-assistant-v1.0"
        assert "hf_secret_token" not in first.stdout + first.stderr + json.dumps(record)

        again = register(root, HF_TOKEN="hf_secret_token", HF_USERNAME="alice")
        assert "no new version" in again.stdout and len(hub.repos) == 1 and len(repo["commits"]) == 1

        save_adapter(root / "models" / "lora_weights", seed=5)
        assert register(root, HF_TOKEN="hf_secret_token", HF_USERNAME="alice").returncode == 0
        assert sorted(hub.repos) == ["alice/prenatal-assistant-v1.0", "alice/prenatal-assistant-v1.1"]

        wrong = register(root, HF_TOKEN="hf_wrong", HF_USERNAME="alice")
        assert wrong.returncode == 1 and "hf_wrong" not in wrong.stderr
        assert "refused to list alice's models (HTTP 401): check that HF_TOKEN is valid" in wrong.stderr
