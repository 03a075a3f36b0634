"""Whether 4b has nothing to do, continues an interrupted run, or starts afresh.

A training run is named by its fingerprint: the base model, the exact training data and every
setting that changes what is learned (not tracking, not clean-up). Its record sits beside the
checkpoints. Checkpoints of another fingerprint (or of no record) are never resumed from: they
are deleted and training starts again; a completed run with its log is done.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from core import artifacts
from core.config import Finetuning, PipelineConfig
from core.files import atomic_write_json
from core.results import TrainingRun, dump, parse

Decision = Literal["done", "resume", "fresh"]


def fingerprint(base: str, train_chat: bytes, settings: Finetuning) -> str:
    learned = settings.model_dump_json(include={"quantization", "lora", "training"})
    return hashlib.sha256(f"{base}|{train_chat.hex()}|{learned}".encode()).hexdigest()


def recorded_run(record: Path) -> TrainingRun | None:
    """The run record beside the checkpoints, None before 4b ran."""
    return parse(TrainingRun, json.loads(record.read_text(encoding="utf-8")), str(record), "4b") if record.is_file() else None


def decide(record: Path, run: str, log: Path) -> Decision:
    previous = recorded_run(record)
    if previous is None or previous.fingerprint != run:
        return "fresh"
    return "done" if previous.completed and log.is_file() else "resume"


def begin(record: Path, output_dir: Path, run: str, base: str, decision: Decision) -> bool:
    """Record the run as started; for a fresh one, delete the checkpoints of the other run first.
    True when there were some."""
    cleared = decision == "fresh" and output_dir.exists()
    if cleared:
        shutil.rmtree(output_dir)
    atomic_write_json(record, dump(TrainingRun(fingerprint=run, base=base, completed=False)))
    return cleared


def finish(record: Path, run: str, base: str, train_pairs: int, test_fingerprint: str) -> None:
    """The run recorded as finished, with what the retraining policy compares the next refresh's data with."""
    atomic_write_json(record, dump(TrainingRun(fingerprint=run, base=base, completed=True, train_pairs=train_pairs,
                                               test_fingerprint=test_fingerprint,
                                               finished_at=datetime.now(UTC).isoformat(timespec="seconds"))))


def training_fingerprint(config: PipelineConfig) -> str | None:
    """4b's fingerprint of the data and settings it trained with (None before 4b ran)."""
    previous = recorded_run(artifacts.path(config, "training_run"))
    return previous.fingerprint if previous else None
