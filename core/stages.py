"""The pipeline's stages as users name them (keys, names, what each writes) and the choice of which to run.

Nothing here imports a flow: ``pipeline.py --list`` and a mistyped stage answer at once, before torch,
docling and Prefect are loaded (~6 s on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Paths


@dataclass(frozen=True)
class Stage:
    key: str
    name: str
    does: str
    writes: tuple[str, ...]  # folders (``paths`` keys) or named outputs (core.artifacts) it writes
    artifact: str | None = None  # the key of the Prefect artifact the stage publishes

    def summary(self, paths: Paths) -> str:
        """What it does and where that lands, in the configured paths."""
        from core import artifacts

        return f"{self.does} → " + ", ".join(str(artifacts.where(paths, name)) for name in self.writes)


STAGES: list[Stage] = [
    Stage("1", "collect", "search (SerpAPI or local) and download PDFs", ("raw",), "collect-summary"),
    Stage("2", "process", "docling PDF → Markdown, clean, chunk by headers", ("chunks",), "process-summary"),
    Stage("3", "generate", "QA pairs from chunks (LLM)", ("qa_dataset",), "generate-summary"),
    Stage("4a", "baseline-eval", "evaluate the base model", ("eval_baseline",)),
    Stage("4b", "train", "LoRA SFT", ("checkpoints",)),
    Stage("4c", "select", "evaluate checkpoints, keep the best", ("lora_weights",)),
    Stage("4d", "final-eval", "evaluate the adapter", ("eval_finetuned",), "eval-comparison"),
    Stage("5", "register", "versioned registration with a model card", ("registry", "registration")),
    Stage("6", "rollout", "load the adapter into the running gateway, smoke test, switch", ("rollout",)),
]
KEYS = [stage.key for stage in STAGES]
STAGE_NAMES = [*KEYS[:3], "4", *KEYS[3:]]  # "4" = 4a-4d
PIPELINE_ARTIFACT = "pipeline-summary"  # the run's summary: each stage's outcome, linking to the stages' artifacts


def artifact_key(key: str) -> str:
    """The key of the Prefect artifact stage ``key`` publishes (the summary links to it by this key)."""
    artifact = STAGES[KEYS.index(key)].artifact
    if artifact is None:
        raise ValueError(f"stage {key} publishes no artifact")
    return artifact


class StageSelectionError(ValueError):
    """A stage name or range the CLI cannot run; the message is the user's one-line answer."""


def _position(name: str, edge: str) -> int:
    if name not in STAGE_NAMES:
        raise StageSelectionError(f"unknown stage '{name}': choose one of {', '.join(STAGE_NAMES)}")
    if name == "4":
        name = "4a" if edge == "start" else "4d"
    return KEYS.index(name)


def select_stages(stage: str | None = None, start: str | None = None, end: str | None = None) -> tuple[list[Stage], bool]:
    """Stages to run, in order, and whether the user asked for them explicitly."""
    if stage is not None and (start is not None or end is not None):
        raise StageSelectionError("use --stage, or --start/--end, not both")
    if stage is not None:
        start = end = stage
    explicit = start is not None or end is not None
    first = _position(start, "start") if start is not None else 0
    last = _position(end, "end") if end is not None else len(STAGES) - 1
    if first > last:
        raise StageSelectionError(f"--start {start} comes after --end {end}")
    return STAGES[first:last + 1], explicit
