"""Pick the best checkpoint by combined score and install its adapter as the model's weights.

The copy is verified (same file hashes) before anything is cleaned up, and the installed
adapter must actually change the model's answers: a LoRA that learned nothing (zero-init B,
a learning rate of 0, a broken target module list) would otherwise be registered and served.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from core import results
from core.artifacts import MissingStageOutput
from core.config import PipelineConfig
from core.files import atomic_folder
from core.naming import checkpoint_step
from core.results import CheckpointSelection, EvaluationReport, dump
from tasks.common.cache_keys import content_key
from tasks.finetune.comparison import selection_line, selection_margin
from tasks.finetune.evaluate import base_model, eval_settings, evaluate_side, sample_questions, stage_questions
from tasks.finetune.resume import training_fingerprint
from tasks.finetune.train import checkpoints

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


class NoOpAdapter(Exception):
    """The adapter does not change any answer of the base model."""


def adapter_hashes(folder: Path) -> dict[str, str] | None:
    """sha256 of each adapter file, or None when the folder does not hold a complete adapter."""
    if not all((folder / name).is_file() for name in ADAPTER_FILES):
        return None
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ADAPTER_FILES}


def best_checkpoint(scores: dict[str, float]) -> str:
    """Highest combined score; ties go to the later checkpoint (more training, same quality)."""
    return max(scores, key=lambda name: (scores[name], checkpoint_step(name)))


@task(name="install-adapter", cache_policy=NO_CACHE)
def install_adapter(checkpoint: Path, target: Path) -> dict[str, str]:
    """Copy the adapter files (and tokenizer files) to ``target`` atomically; returns the verified hashes."""
    missing = [name for name in ADAPTER_FILES if not (checkpoint / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkpoint} has no {', '.join(missing)}")
    with atomic_folder(target) as staging:
        for path in checkpoint.iterdir():
            if path.is_file() and (path.name in ADAPTER_FILES or path.name.startswith(("tokenizer", "chat_template"))):
                shutil.copy2(path, staging / path.name)
        if adapter_hashes(staging) != adapter_hashes(checkpoint):
            raise OSError(f"copy of {checkpoint} to {target} does not match the original")
    return adapter_hashes(target)


def cleanup_checkpoints(checkpoints: list[Path], keep: Path, installed: Path) -> list[str]:
    """Remove every checkpoint except ``keep``, and only once ``installed`` is verified equal to it."""
    if adapter_hashes(installed) != adapter_hashes(keep):
        raise OSError(f"{installed} does not match {keep}: not removing any checkpoint")
    removed = []
    for checkpoint in checkpoints:
        if checkpoint != keep:
            shutil.rmtree(checkpoint)
            removed.append(checkpoint.name)
    return removed


def changed_answers(baseline: list[str], tuned: list[str]) -> int:
    return sum(a.strip() != b.strip() for a, b in zip(baseline, tuned, strict=True))


def choose_checkpoint(reports: dict[str, EvaluationReport], baseline: EvaluationReport, resamples: int, seed: int,
                      confidence: float) -> dict:
    """The best checkpoint by validation score, its margin over the runner-up, and how many answers it changes
    from the base model's (``baseline``: the base model on the same questions). Raises NoOpAdapter when none."""
    scores = {name: report.metrics["combined"] for name, report in reports.items()}
    selected = best_checkpoint(scores)
    changed = changed_answers([p.prediction for p in baseline.predictions],
                              [p.prediction for p in reports[selected].predictions])
    if changed == 0:
        raise NoOpAdapter(f"the selected adapter ({selected}) gives the base model's answer to all "
                          f"{baseline.examples} validation questions: it learned nothing (check learning_rate, steps, "
                          "lora.target_modules)")
    per_question = {name: [p.scores["combined"] for p in report.predictions] for name, report in reports.items()}
    return {"selected": selected, "scores": scores, "metric": "combined", "split": "validation",
            "eval_examples": baseline.examples, "baseline_score": baseline.metrics["combined"],
            "margin": selection_margin(per_question, selected, resamples, seed, confidence),
            "answers_changed_vs_base": changed}


def selection_key(config: PipelineConfig, records: list[dict]) -> str:
    """The training run, the questions and the eval settings a selection was made from."""
    return content_key("selection", {"run": training_fingerprint(config), "records": records,
                                     "evaluation": eval_settings(config)})


def standing_selection(config: PipelineConfig, key: str, target: Path) -> CheckpointSelection | None:
    """The selection already made from ``key``, when its adapter is still the one installed at ``target``: it
    stands (cleanup left only the chosen checkpoint, so choosing again would compare it with itself)."""
    previous = results.read_if_present(config, CheckpointSelection)
    if previous and previous.selection_key == key and adapter_hashes(target) == previous.adapter_sha256:
        return previous
    return None


def select_and_install(config: PipelineConfig) -> tuple[CheckpointSelection, bool]:
    """Every checkpoint on the validation questions, the best installed as the adapter and checkpoint_selection.json
    written; or the selection already made for this training run (True: it stands)."""
    e, every = config.evaluation, stage_questions(config, "validation")
    records = sample_questions(every, e.max_validation_questions, e.seed)
    key, target = selection_key(config, records), config.path(config.paths.lora_weights)
    if previous := standing_selection(config, key, target):
        return previous, True
    base, found = base_model(config), checkpoints(config.path(config.paths.checkpoints))
    if not found:
        raise MissingStageOutput("4c", config.path(config.paths.checkpoints) / "checkpoint-*", "4b")
    reports = {ckpt.name: evaluate_side(config, base, ckpt, records, "validation")[0] for ckpt in found}
    selection = choose_checkpoint(reports, evaluate_side(config, base, None, records, "validation")[0], e.resamples,
                                  e.seed, e.confidence)
    chosen = next(c for c in found if c.name == selection["selected"])
    selection |= {"validation_total": len(every),  # eval_examples of them were asked
                  "installed_to": str(target), "adapter_sha256": install_adapter(chosen, target),
                  "removed_checkpoints": cleanup_checkpoints(found, chosen, target)
                  if config.finetuning.cleanup_checkpoints else [], "selection_key": key}
    record = CheckpointSelection.model_validate(selection)
    results.write(config, record)
    return record, False


def selection_said(selection: CheckpointSelection) -> str:
    asked, total = selection.eval_examples, selection.validation_total or selection.eval_examples
    return (f"4c select: {selection_line(dump(selection))}; all: "
            + ", ".join(f"{n} {s:.4f}" for n, s in selection.scores.items())
            + f"; {selection.answers_changed_vs_base}/{asked} answers differ from base"
            + (f" ({asked} of {total} validation questions, a seeded sample)" if asked < total else ""))
