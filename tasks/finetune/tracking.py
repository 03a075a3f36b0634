"""Experiment tracking with Weights & Biases (``finetuning.wandb``).

One W&B run per step of stage 4 that produces numbers: 4b's training (the trainer's own W&B
callback logs the loss into the run opened here), 4c's checkpoint scores and choice, 4d's test
metrics. The three share a group named after the training run, so the UI shows them together
even when the steps run as separate processes or on separate machines. With
``WANDB_MODE=offline`` the runs are written under ``paths.logs``/wandb for ``wandb sync`` later.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.config import PipelineConfig
from core.naming import checkpoint_step
from core.results import CheckpointSelection
from tasks.finetune.resume import training_fingerprint


@contextmanager
def wandb_run(config: PipelineConfig, job: str, group: str | None) -> Iterator[object | None]:
    """An open W&B run for ``job`` ("train", "select", "final-eval"), or None when tracking is off."""
    f = config.finetuning
    if not f.wandb:
        yield None
        return
    import wandb

    folder = config.path(config.paths.logs)
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=f.wandb_project or config.adapter_stem(), name=f.wandb_run_name, group=group,
                     job_type=job, dir=str(folder),
                     config={"domain": config.domain, "use_case": config.use_case, "base_model": f.base_model,
                             "finetuning": f.model_dump(mode="json", include={"quantization", "lora", "training"})})
    try:
        yield run
    finally:
        run.finish()


def log_results(config: PipelineConfig, job: str, group: str | None, summary: dict,
                history: list[dict] | None = None) -> None:
    """Log ``history`` rows (one ``run.log`` each) and ``summary`` (the run's final figures) as one W&B run."""
    with wandb_run(config, job, group) as run:
        if run is None:
            return
        for row in history or []:
            run.log(row)
        run.summary.update(summary)


def where(run) -> str:
    """Where a finished run is: its page, or its offline folder and how to upload it."""
    if run.url:
        return run.url
    folder = Path(run.dir).parent
    return f"saved offline, upload with: wandb sync {folder}"


def tracking_group(config: PipelineConfig) -> str | None:
    """The W&B group of 4b, 4c and 4d of one training run."""
    run = training_fingerprint(config)
    return run[:12] if run else None


def log_selection(config: PipelineConfig, selection: CheckpointSelection) -> None:
    """4c's choice, with each checkpoint's validation score by step."""
    log_results(config, "select", tracking_group(config),
                {"selected": selection.selected, "validation/baseline_combined": selection.baseline_score,
                 "validation/margin": (selection.margin or {}).get("delta"),
                 "validation/answers_changed": selection.answers_changed_vs_base},
                [{"checkpoint_step": checkpoint_step(name), "validation/combined": score}
                 for name, score in selection.scores.items()])


def log_comparison(config: PipelineConfig, summary: dict) -> None:
    """4d's figures on the test set: each side's metrics, their differences and the combined difference's interval."""
    log_results(config, "final-eval", tracking_group(config),
                {f"test/{side}/{name}": stats[key] for name, stats in summary["metrics"].items()
                 for side, key in (("baseline", "before"), ("fine_tuned", "after"), ("delta", "delta"))}
                | {f"test/delta/combined_{bound}": summary["metrics"]["combined"][bound] for bound in ("low", "high")})


def log_loss_history(run, summary: dict) -> None:
    """Several training processes log into no run of ours: their loss history, after the fact."""
    if run is not None and summary and summary["processes"] > 1:
        for row in summary["loss_history"]:
            run.log({"train/loss": row["loss"]}, step=row["step"])
