"""The files stages hand each other: where each lives and which stage writes it.

Stages talk through files. A stage that reads another's output asks for it here by name, so
a missing input is one error naming the stage to run (exit 1: the configuration is fine,
the work is not done yet), and no module spells another stage's file names: the per-document
files and caches are named by the functions at the end.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from core.prompts import PROMPT_VERSION

if TYPE_CHECKING:
    from core.config import Paths, PipelineConfig

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
    "excluded": ("3", "qa_dataset", "excluded.json"),  # pairs left out by the review or the contamination check
    "eval_baseline": ("4a", "reports", "eval_baseline.json"),
    "train_log": ("4b", "reports", "train_log.json"),
    "training_run": ("4b", "checkpoints", "run.json"),
    "checkpoint_selection": ("4c", "reports", "checkpoint_selection.json"),
    "eval_finetuned": ("4d", "reports", "eval_finetuned.json"),
    "comparison": ("4d", "reports", "comparison.json"),
    "registration": ("5", "reports", "registration.json"),
    "rollout": ("6", "reports", "rollout.json"),
}
Name = Literal["metadata", "chunks", "train", "train_chat", "validation", "test", "split", "stats", "excluded",
               "eval_baseline",
               "train_log", "training_run", "checkpoint_selection", "eval_finetuned", "comparison", "registration",
               "rollout"]
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


def where(paths: Paths, name: str) -> Path:
    """A named output's path, or a folder's (a ``paths`` key), as configured (relative to the config's root)."""
    if name in OUTPUTS:
        _, folder, file = OUTPUTS[name]
        return getattr(paths, folder) / file
    return getattr(paths, name)


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



# files each stage keeps per document or per call, inside its configured folder
def raw_document(raw_dir: Path, sha256: str, kind: str = "pdf") -> Path:
    """Stage 1's copy of a downloaded document (``kind``: pdf or html), named by its content, kept as fetched."""
    return raw_dir / f"{sha256}.{kind}"


def markdown(processed_dir: Path, sha256: str) -> Path:
    """Stage 2's Markdown of one document."""
    return processed_dir / f"{sha256}.md"


def conversions(processed_dir: Path) -> Path:
    """Stage 2's record of every conversion (ok or failed), by document."""
    return processed_dir / "manifest.json"


def llm_cache(config: PipelineConfig, kind: Literal["groups", "judge", "grades"]) -> Path:
    """Where stage 3's provider calls (pairs per group, judge verdicts) and 4d's grades are cached."""
    cache = config.path(config.paths.qa_dataset) / "cache"
    return cache if kind == "groups" else cache / kind


def llm_cache_key(kind: Literal["groups", "judge", "grades"], provider: str, model: str, subject: str) -> str:
    """A cached LLM call's name: what was asked (a group's key, a pair's id, the grading prompt), of which provider
    and model, under which prompt version. One spelling per kind, kept as first written: another spelling would
    orphan every call users have paid for."""
    if kind == "judge":
        return f"{subject}-{provider}-{model.replace('/', '_')}-{PROMPT_VERSION}"
    text = (f"{subject}|{provider}|{model}|{PROMPT_VERSION}" if kind == "groups"
            else f"{provider}|{model}|{PROMPT_VERSION}|{subject}")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return digest if kind == "groups" else digest[:32]


def cache_entry(folder: Path, key: str) -> Path:
    """One cached call's reply, by its key."""
    return folder / f"{key}.json"


def review_file(config: PipelineConfig) -> Path:
    """The reviewer's verdicts (tasks.common.review): written by the review app, read by stages 3 and 4."""
    return config.path(config.paths.qa_dataset) / "review.json"


def report_page(config: PipelineConfig) -> Path:
    return config.path(config.paths.reports) / "index.html"


def comparison_markdown(config: PipelineConfig) -> Path:
    return config.path(config.paths.reports) / "comparison.md"


def two_way_split(config: PipelineConfig) -> list[Path]:
    """The files of the train/eval split that stage 3 wrote before it split three ways (removed when it rewrites)."""
    folder = config.path(config.paths.qa_dataset)
    return [folder / "eval.json", folder / "eval_chat.jsonl"]
