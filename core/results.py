"""What stages 4–6 write and read: the evaluations, the training run, the checkpoint selection, the comparison,
the registration and the rollout, each a model with the keys its JSON file has always had.

A file is written and read through its model, so a reader sees the shape the writer promised (the registration is
read by stage 6 and by the gateway, in core because the gateway imports nothing else). Each file carries
``schema_version``: a file without it was written before the field existed and is read as version 1; a newer
version than this code knows is refused with a message naming the file, as is a file that does not fit its
model. Keys a model does not name are kept (``extra="allow"``): they are detail its stage writes for people
and the report, passed through untouched.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core import artifacts
from core.files import atomic_write_json

if TYPE_CHECKING:
    from pathlib import Path

    from core.config import PipelineConfig

SCHEMA_VERSION = 1


class StageResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    ARTIFACT: ClassVar[artifacts.Name]
    schema_version: int = SCHEMA_VERSION


R = TypeVar("R", bound=StageResult)


class Prediction(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    question: str
    reference: str
    prediction: str
    scores: dict[str, float]


class EvalSettings(BaseModel):
    """How the answers were generated and scored: served answers and exports are asked the same way."""

    model_config = ConfigDict(extra="allow")

    max_new_tokens: int
    batch_size: int
    bertscore_model: str
    system_prompt: str
    decoding: str = "greedy"


class EvaluationReport(StageResult):
    """One model (base, or base + adapter) on one side's questions: 4a's and 4d's reports, 4c's per checkpoint."""

    ARTIFACT = "eval_finetuned"  # and eval_baseline, named where it is read or written
    model: str
    adapter: str | None
    examples: int
    metrics: dict[str, float]
    weights: dict[str, float]
    settings: EvalSettings
    predictions: list[Prediction]
    split: str | None = None


class TrainingRun(StageResult):
    """4b's record of the run its checkpoints belong to (checkpoints/run.json)."""

    ARTIFACT = "training_run"
    fingerprint: str
    base: str
    completed: bool
    train_pairs: int | None = None  # what a finished run trained on (None: recorded before these three were)
    test_fingerprint: str | None = None
    finished_at: str | None = None


class CheckpointSelection(StageResult):
    """4c's choice on the validation questions, and what it installed."""

    ARTIFACT = "checkpoint_selection"
    selected: str
    scores: dict[str, float]
    metric: str
    split: str = "validation"
    eval_examples: int
    baseline_score: float | None = None
    margin: dict[str, Any] | None = None
    answers_changed_vs_base: int
    adapter_sha256: dict[str, str]
    installed_to: str | None = None
    validation_total: int | None = None  # None: written before it was recorded, as were the two below
    removed_checkpoints: list[str] = []
    selection_key: str | None = None


class Comparison(StageResult):
    """4d: the fine-tuned model against the baseline on the test questions, every metric paired."""

    ARTIFACT = "comparison"
    split: str
    examples: int
    documents: int
    metrics: dict[str, dict[str, Any]]  # metric → tasks.common.paired.Paired's fields
    headline: str
    caveats: list[str] = []
    judge: dict[str, Any] | None = None
    vs_previous: dict[str, Any] | None = None  # against the version serving now (its name, combined, headline)


class Registration(StageResult):
    """Stage 5: the version registered, or the one these weights were already registered as."""

    ARTIFACT = "registration"
    status: Literal["registered", "unchanged"]
    name: str
    target: Literal["local", "hub"]
    location: str
    adapter_sha256: str
    previous_versions: list[str] = []
    metrics: dict[str, dict[str, float]] = {}
    promotion: dict[str, Any] | None = None
    exports: dict[str, dict[str, Any]] = {}
    lineage: dict[str, Any] = {}  # the version it follows and the training run (data, test set) it came from
    registered_at: str | None = None
    checked_at: str | None = None


class Rollout(StageResult):
    """Stage 6: what was put into service (or kept), how, and its parity with 4d as served."""

    ARTIFACT = "rollout"
    adapter: str
    mode: str
    gateway: str
    started_at: str
    status: Literal["switched", "already_active", "rolled_back", "parity_failed", "skipped"] | None = None
    previous: str | None = None
    backend: str | None = None
    active: str | None = None
    container: str | None = None
    error: str | None = None
    reason: str | None = None
    warning: str | None = None
    smoke_test: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    finished_at: str | None = None


class UnreadableResult(Exception):
    """A stage file that does not fit its model or comes from a newer version: the message names it and the fix."""


def parse(model: type[R], raw: dict, where: str, stage: str) -> R:
    version = raw.get("schema_version", 1) if isinstance(raw, dict) else 1
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UnreadableResult(f"{where} has schema_version {version}, newer than this pipeline reads "
                               f"({SCHEMA_VERSION}): upgrade the pipeline, or run stage {stage} again with this one")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in error.errors()[:3])
        raise UnreadableResult(f"{where} is not a {model.__name__} record ({problems}): run stage {stage} again "
                               "to write it anew") from None


def read(config: PipelineConfig, model: type[R], needed_by: str, name: artifacts.Name | None = None) -> R:
    """The stage's file as ``model``; MissingStageOutput when its stage has not run."""
    name = name or model.ARTIFACT
    return _parsed(model, artifacts.require(config, name, needed_by), name)


def read_if_present(config: PipelineConfig, model: type[R], name: artifacts.Name | None = None) -> R | None:
    name = name or model.ARTIFACT
    found = artifacts.path(config, name)
    return _parsed(model, found, name) if found.is_file() else None


def _parsed(model: type[R], found: Path, name: artifacts.Name) -> R:
    return parse(model, json.loads(found.read_text(encoding="utf-8")), str(found), artifacts.OUTPUTS[name][0])


def dump(record: StageResult) -> dict:
    """The JSON a record is written as: the keys it was given (no default a writer left out), its version first."""
    return {"schema_version": SCHEMA_VERSION, **record.model_dump(mode="json", exclude_unset=True,
                                                                 exclude={"schema_version"})}


def write(config: PipelineConfig, record: StageResult, name: artifacts.Name | None = None) -> None:
    atomic_write_json(artifacts.path(config, name or record.ARTIFACT), dump(record))
