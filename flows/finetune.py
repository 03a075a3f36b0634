"""Stage 4 — fine-tune: baseline eval (4a), LoRA SFT (4b), checkpoint selection (4c), final eval (4d).

Each step is a subflow that can run alone (``--stage 4b``) and reads/writes only files, so
the whole stage can be dispatched to a GPU work pool: nothing here assumes this machine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from prefect.artifacts import create_markdown_artifact

from flows.config import ConfigError, PipelineConfig, Secrets
from flows.report import say
from flows.threaded import threaded_flow
from tasks.base_model import prepare_base_model
from tasks.cache_keys import content_key
from tasks.compare import comparison_markdown, write_comparison
from tasks.evaluate import evaluate_model, load_eval_set
from tasks.files import atomic_write_json
from tasks.prompts import system_prompt
from tasks.select import NoOpAdapter, adapter_hashes, best_checkpoint, changed_answers, cleanup_checkpoints, install_adapter
from tasks.tokens import model_ref
from tasks.train import TrainSettings, checkpoints, train_lora


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def preflight(config: PipelineConfig) -> None:
    """Refuse settings this machine cannot honour, naming the setting; never downgrade silently."""
    import importlib.util

    f = config.finetuning
    if f.training.bf16:
        import torch

        supported = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else _cpu_has_bf16()
        if not supported:
            raise ConfigError("finetuning.training.bf16: true, but this machine has no bf16 support "
                              "(no CUDA GPU with bf16, no avx512_bf16/amx_bf16 CPU): set it to false")
    needs_bnb = [name for name, used in (("finetuning.quantization", f.quantization != "none"),
                                          ("finetuning.training.optim", f.training.optim.startswith("paged_"))) if used]
    if needs_bnb and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"{' and '.join(needs_bnb)}: bitsandbytes is needed and not installed: "
                          "pip install 'bitsandbytes>=0.50' (or quantization: none and optim: adamw_torch)")
    if f.wandb:
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("finetuning.wandb: true needs the wandb package: pip install wandb")
        import os

        if Secrets().wandb_api_key is None and os.environ.get("WANDB_MODE") != "offline":
            raise ConfigError("finetuning.wandb: true needs WANDB_API_KEY (or WANDB_MODE=offline), or set wandb: false")


def _base(config: PipelineConfig) -> str:
    f = config.finetuning
    return prepare_base_model(f.base_model, f.base_model_gguf, config.path(config.paths.base_model))


def _eval_kwargs(config: PipelineConfig) -> dict:
    e = config.evaluation
    return {"system": system_prompt(config.domain), "max_new_tokens": e.max_new_tokens, "batch_size": e.batch_size,
            "bertscore_model": model_ref(e.bertscore_model, "evaluation.bertscore_model"),
            "bertscore_layers": e.bertscore_num_layers, "weights": dict(e.weights)}


def _eval_set(config: PipelineConfig, limit: int | None = None) -> list[dict]:
    try:
        return load_eval_set(config.path(config.paths.qa_dataset) / "eval.json", limit)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"stage 4 has no eval set: {error}") from None


def _evaluate(config: PipelineConfig, base: str, adapter: Path | None, records: list[dict]) -> tuple[dict, bool]:
    """The report, and whether it came from the cache (evaluations are cached by content, see tasks.evaluate).

    The report names this call's paths: a cached one may have been made for a copy elsewhere.
    """
    evaluate = evaluate_model.with_options(result_storage=config.result_storage())
    state = evaluate(base, adapter, records, **_eval_kwargs(config), return_state=True)
    report = state.result(_sync=True)  # see flows.threaded
    return {**report, "model": base, "adapter": str(adapter) if adapter else None}, state.name == "Cached"


def _cached_note(cached: bool) -> str:
    return " (cached: the same weights, questions and settings were evaluated before)" if cached else ""


def train_settings(config: PipelineConfig) -> TrainSettings:
    f, t = config.finetuning, config.finetuning.training
    return TrainSettings(
        r=f.lora.r, alpha=f.lora.alpha, dropout=f.lora.dropout, target_modules=tuple(f.lora.target_modules),
        quantization=f.quantization, strategy=t.strategy, epochs=t.epochs, max_steps=t.max_steps,
        batch_size=t.batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler=t.lr_scheduler, warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, max_seq_length=t.max_seq_length, optim=t.optim,
        bf16=t.bf16, gradient_checkpointing=t.gradient_checkpointing, save_steps=t.save_steps,
        logging_steps=t.logging_steps, seed=t.seed,
        report_to=("wandb",) if f.wandb else ())


@threaded_flow("baseline-eval")
def baseline_eval(config: PipelineConfig) -> dict:
    report, cached = _evaluate(config, _base(config), None, _eval_set(config))
    atomic_write_json(config.path(config.paths.reports) / "eval_baseline.json", report)
    say(f"4a baseline: combined {report['metrics']['combined']:.4f} on {report['examples']} questions{_cached_note(cached)}")
    return report["metrics"]


@threaded_flow("train")
def train(config: PipelineConfig) -> dict:
    """LoRA SFT; resumes an interrupted run, starts afresh when the data or settings changed."""
    import os

    if config.finetuning.wandb:
        os.environ.setdefault("WANDB_PROJECT", config.finetuning.wandb_project)
    base = _base(config)
    train_chat = config.path(config.paths.qa_dataset) / "train_chat.jsonl"
    if not train_chat.exists():
        raise ConfigError(f"stage 4b has no training data: {train_chat} is missing (run stage 3 first)")
    output_dir = config.path(config.paths.checkpoints)
    settings = train_settings(config)
    fingerprint = hashlib.sha256(f"{base}|{train_chat.read_bytes().hex()}|{settings}".encode()).hexdigest()
    marker = output_dir / "run.json"
    log_path = config.path(config.paths.reports) / "train_log.json"
    previous = json.loads(marker.read_text()) if marker.exists() else None
    if previous and previous["fingerprint"] == fingerprint and previous.get("completed") and log_path.exists():
        say(f"4b train: already done for this data and these settings (delete {output_dir} to train again)")
        return json.loads(log_path.read_text())
    if output_dir.exists() and (previous is None or previous["fingerprint"] != fingerprint):
        say(f"4b: {output_dir} holds checkpoints of other data or settings: starting afresh")
        shutil.rmtree(output_dir)
    atomic_write_json(marker, {"fingerprint": fingerprint, "base": base, "completed": False})
    summary = train_lora(base, train_chat, output_dir, settings, log_path)
    atomic_write_json(marker, {"fingerprint": fingerprint, "base": base, "completed": True})
    losses = [h["loss"] for h in summary["loss_history"]]
    say(f"4b train: {summary['steps']} steps, loss {losses[0]:.3f} → {losses[-1]:.3f}, "
        f"checkpoints {', '.join(summary['checkpoints'])}"
        + (f" (resumed from {summary['resumed_from']})" if summary["resumed_from"] else "")
        + (f"; {summary['examples_too_long']} examples over max_seq_length left out" if summary["examples_too_long"] else ""))
    return summary


def _selection_key(config: PipelineConfig, records: list[dict]) -> str:
    """The training run (4b's fingerprint), the questions and the eval settings a selection was made from."""
    marker = config.path(config.paths.checkpoints) / "run.json"
    run = json.loads(marker.read_text())["fingerprint"] if marker.exists() else None
    return content_key("selection", {"run": run, "records": records, "evaluation": _eval_kwargs(config)})


@threaded_flow("select-checkpoint")
def select_checkpoint(config: PipelineConfig) -> dict:
    """Evaluate every checkpoint and install the best; a selection already made for this training run stands.

    Cleanup leaves only the chosen checkpoint, so selecting again after it would compare one
    checkpoint with itself and lose the others' scores from the report.
    """
    records = _eval_set(config, config.evaluation.checkpoint_eval_samples)
    key = _selection_key(config, records)
    report_path = config.path(config.paths.reports) / "checkpoint_selection.json"
    target = config.path(config.paths.lora_weights)
    previous = json.loads(report_path.read_text()) if report_path.exists() else None
    if previous and previous.get("selection_key") == key and adapter_hashes(target) == previous["adapter_sha256"]:
        say(f"4c select: already done for this training run: {previous['selected']} installed in {target}")
        return previous
    base = _base(config)
    found = checkpoints(config.path(config.paths.checkpoints))
    if not found:
        raise ConfigError(f"stage 4c has no checkpoints in {config.path(config.paths.checkpoints)} (run stage 4b first)")
    reports = {ckpt.name: _evaluate(config, base, ckpt, records)[0] for ckpt in found}
    scores = {name: report["metrics"]["combined"] for name, report in reports.items()}
    selected = best_checkpoint(scores)
    chosen = next(c for c in found if c.name == selected)

    baseline = _evaluate(config, base, None, records)[0]
    changed = changed_answers([p["prediction"] for p in baseline["predictions"]],
                              [p["prediction"] for p in reports[selected]["predictions"]])
    if changed == 0:
        raise NoOpAdapter(f"the selected adapter ({selected}) gives the base model's answer to all {len(records)} "
                          "eval questions: it learned nothing (check learning_rate, steps, lora.target_modules)")
    hashes = install_adapter(chosen, target)
    removed = cleanup_checkpoints(found, chosen, target) if config.finetuning.cleanup_checkpoints else []
    selection = {"selected": selected, "scores": scores, "metric": "combined", "eval_examples": len(records),
                 "answers_changed_vs_base": changed, "installed_to": str(target), "adapter_sha256": hashes,
                 "removed_checkpoints": removed, "selection_key": key}
    atomic_write_json(report_path, selection)
    say(f"4c select: {selected} (combined {scores[selected]:.4f} of "
        + ", ".join(f"{n} {s:.4f}" for n, s in scores.items()) + f"); {changed}/{len(records)} answers differ from base")
    return selection


@threaded_flow("final-eval")
def final_eval(config: PipelineConfig) -> dict:
    reports_dir = config.path(config.paths.reports)
    adapter = config.path(config.paths.lora_weights)
    if not (adapter / "adapter_model.safetensors").exists():
        raise ConfigError(f"stage 4d has no adapter in {adapter} (run stage 4c first)")
    report, cached = _evaluate(config, _base(config), adapter, _eval_set(config))
    atomic_write_json(reports_dir / "eval_finetuned.json", report)
    say(f"4d final: combined {report['metrics']['combined']:.4f} on {report['examples']} questions{_cached_note(cached)}")
    baseline_path = reports_dir / "eval_baseline.json"
    if baseline_path.exists():
        baseline = json.loads(baseline_path.read_text())
        selection_path, log_path = reports_dir / "checkpoint_selection.json", reports_dir / "train_log.json"
        selection = json.loads(selection_path.read_text()) if selection_path.exists() else None
        train_log = json.loads(log_path.read_text()) if log_path.exists() else None
        written = write_comparison(baseline, report, selection, train_log, reports_dir)
        create_markdown_artifact(_sync=True, key="eval-comparison", markdown=comparison_markdown(baseline, report, selection),
                                 description="Stage 4: baseline vs fine-tuned")
        say(f"4d: baseline {baseline['metrics']['combined']:.4f} → fine-tuned {report['metrics']['combined']:.4f}; "
            f"wrote {', '.join(p.name for p in written)}")
    return report["metrics"]
