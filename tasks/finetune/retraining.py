"""Whether the data a refresh left is worth a training run: enough new training pairs, or a last run old enough to
redo with whatever is new. Only training pairs count: 4b trains on them alone, so a refresh whose new documents went
to the validation or test side would train the same weights again (4b's fingerprint), and stage 5 would register
nothing. A refresh that changed nothing is never worth one. The decision names its reason, for the run's summary and
the event a trigger reads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from prefect.artifacts import create_markdown_artifact

from core import artifacts, results
from core.config import PipelineConfig, Retraining
from core.results import TrainingRun
from tasks.common.events import RETRAINING_DUE, RETRAINING_NOT_DUE, announce

DECISION_ARTIFACT = "retraining-decision"  # on the refresh's run: what the trigger was told, and why


@dataclass(frozen=True)
class RetrainingDecision:
    due: bool
    reason: str
    train_pairs: int
    new_train_pairs: int
    test_changed: bool
    test_fingerprint: str

    def payload(self) -> dict:
        return asdict(self)

    @property
    def verdict(self) -> str:
        return "due" if self.due else "not due"

    def line(self) -> str:
        return f"retraining: {self.verdict}, {self.reason}"


def retraining_due(policy: Retraining, train_pairs: int, test_fingerprint: str, last: TrainingRun | None,
                   now: datetime) -> RetrainingDecision:
    """The decision for a dataset of ``train_pairs`` and test set ``test_fingerprint``, after the run ``last``."""
    def decided(due: bool, reason: str, new: int, changed: bool) -> RetrainingDecision:
        return RetrainingDecision(due, reason, train_pairs, new, changed, test_fingerprint)

    if last is None or not last.completed:
        return decided(train_pairs > 0, "no finished training run yet" if train_pairs else "no training pairs yet",
                       train_pairs, True)
    new = max(0, train_pairs - last.train_pairs) if last.train_pairs is not None else train_pairs
    changed = last.test_fingerprint is not None and last.test_fingerprint != test_fingerprint
    if new >= policy.min_new_train_pairs:
        return decided(True, f"{new} new training pairs ≥ {policy.min_new_train_pairs}", new, changed)
    if new and policy.max_days and last.finished_at:
        age = (now - datetime.fromisoformat(last.finished_at)).days
        if age >= policy.max_days:
            return decided(True, f"{new} new training pairs and the last run is {age} days old ≥ {policy.max_days}",
                           new, changed)
    held_out = " (the test questions changed: the next training run is measured on them)" if changed else ""
    return decided(False, f"{new} new training pairs < {policy.min_new_train_pairs}{held_out}", new, changed)


def test_set_fingerprint(config: PipelineConfig) -> str:
    """The test questions stage 3 left (their ids): what 4a and 4d measure on."""
    ids = sorted(record["id"] for record in artifacts.load_if_present(config, "test", []))
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def train_pairs(config: PipelineConfig) -> int:
    """The conversations 4b would train on (train_chat.jsonl: the review's verdicts applied)."""
    chat = artifacts.path(config, "train_chat")
    return sum(1 for line in chat.read_text(encoding="utf-8").splitlines() if line.strip()) if chat.is_file() else 0


def retraining_decision(config: PipelineConfig) -> RetrainingDecision:
    """The decision for the dataset on disk now, after the training run recorded beside the checkpoints."""
    return retraining_due(config.orchestration.retraining, train_pairs(config), test_set_fingerprint(config),
                          results.read_if_present(config, TrainingRun), datetime.now(UTC))


def decide_and_announce(config: PipelineConfig, config_path: str) -> RetrainingDecision:
    """The decision, kept as the run's ``retraining-decision`` artifact and emitted as the event the ``retrain``
    deployment's trigger reads (the flow says its line)."""
    decision = retraining_decision(config)
    create_markdown_artifact(_sync=True, key=DECISION_ARTIFACT, description="Whether this refresh starts a training run",
                             markdown="\n".join([f"# Retraining {decision.verdict}", "",
                                                 decision.reason, "",
                                                 "| training pairs | new since the last run | test questions changed |",
                                                 "|---|---|---|", f"| {decision.train_pairs} | "
                                                 f"{decision.new_train_pairs} | {'yes' if decision.test_changed else 'no'} |"]))
    announce(config, RETRAINING_DUE if decision.due else RETRAINING_NOT_DUE, config_path, decision.payload())
    return decision
