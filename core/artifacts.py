"""The files stages hand each other: where each lives and which stage writes it.

Stages talk through files. A stage that reads another's output asks for it here by name, so
a missing input is one error naming the stage to run (exit 1: the configuration is fine,
the work is not done yet), and no module spells another stage's file names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from core.config import PipelineConfig

# name → (the stage that writes it, the configured folder it lives in, its file name)
OUTPUTS: dict[str, tuple[str, str, str]] = {
    "metadata": ("1", "raw", "metadata.json"),
    "chunks": ("2", "chunks", "chunks.json"),
    "train": ("3", "qa_dataset", "train.json"),
    "train_chat": ("3", "qa_dataset", "train_chat.jsonl"),
    "validation": ("3", "qa_dataset", "validation.json"),
    "test": ("3", "qa_dataset", "test.json"),
    "split": ("3", "qa_dataset", "split.json"),
    "stats": ("3", "qa_dataset", "stats.json"),
    "eval_baseline": ("4a", "reports", "eval_baseline.json"),
    "train_log": ("4b", "reports", "train_log.json"),
    "checkpoint_selection": ("4c", "reports", "checkpoint_selection.json"),
    "eval_finetuned": ("4d", "reports", "eval_finetuned.json"),
    "comparison": ("4d", "reports", "comparison.json"),
    "registration": ("5", "reports", "registration.json"),
    "rollout": ("6", "reports", "rollout.json"),
}
Name = Literal["metadata", "chunks", "train", "train_chat", "validation", "test", "split", "stats", "eval_baseline",
               "train_log", "checkpoint_selection", "eval_finetuned", "comparison", "registration", "rollout"]
assert set(get_args(Name)) == set(OUTPUTS)


class MissingStageOutput(Exception):
    """An earlier stage's output is not there yet: the message names the file and the stage to run."""

    def __init__(self, needed_by: str, path: Path, stage: str) -> None:
        super().__init__(f"stage {needed_by} needs {path}: run stage {stage} first "
                         f"(python pipeline.py --stage {stage}, or a range that includes it)")
        self.path, self.stage = path, stage


def path(config: PipelineConfig, name: Name) -> Path:
    _, folder, file = OUTPUTS[name]
    return config.path(getattr(config.paths, folder)) / file


def require(config: PipelineConfig, name: Name, needed_by: str) -> Path:
    """The output's path; MissingStageOutput when the stage that writes it has not run."""
    found = path(config, name)
    if not found.is_file():
        raise MissingStageOutput(needed_by, found, OUTPUTS[name][0])
    return found


def load(config: PipelineConfig, name: Name, needed_by: str) -> Any:
    """A JSON output, parsed; MissingStageOutput when it is not there."""
    return json.loads(require(config, name, needed_by).read_text(encoding="utf-8"))


def load_if_present(config: PipelineConfig, name: Name, default: Any = None) -> Any:
    """A JSON output, or ``default`` when its stage has not run (an optional input)."""
    found = path(config, name)
    return json.loads(found.read_text(encoding="utf-8")) if found.is_file() else default
