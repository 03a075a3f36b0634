"""Answers from somewhere other than 4d (the served adapter, an export on its own engine) paired with 4d's on the same
test questions: how many are identical, and the combined score's change with its interval, 4d's own statistics.
One measure for the rollout's parity gate and for every export, so "21 of 23 identical" means the same in both."""

from __future__ import annotations

from core.config import Evaluation
from core.results import EvaluationReport, Prediction
from tasks.common.paired import Paired, paired_difference


def parity_sample(eval_report: EvaluationReport, limit: int | None) -> list[Prediction]:
    """4d's first ``limit`` test predictions (all of them with None): the questions every parity check asks."""
    return eval_report.predictions[:limit]


def measure(answers: list[str], sample: list[Prediction], evaluation: Evaluation, eval_report: EvaluationReport,
            side: str) -> dict:
    """``answers`` to ``sample``'s questions scored with 4d's metrics and paired with 4d's scores; ``side`` names
    where they came from in the headline ("served", "exported")."""
    from tasks.common.metrics import score_all  # torch and BERTScore: only when a check gets this far

    e = evaluation
    scores, _ = score_all(answers, [x.reference for x in sample], eval_report.settings.bertscore_model,
                          e.bertscore_num_layers, eval_report.weights)
    change = paired_difference([x.scores["combined"] for x in sample], [x["combined"] for x in scores],
                               e.resamples, e.seed, e.confidence)
    identical = sum(a.strip() == x.prediction.strip() for a, x in zip(answers, sample, strict=True))
    return {"questions": len(sample), "identical": identical, "combined": change.model_dump(),
            "headline": parity_line(identical, change, side),
            "differing": [{"question": x.question, "evaluated": x.prediction, side: a}
                          for a, x in zip(answers, sample, strict=True) if a.strip() != x.prediction.strip()][:5]}


def parity_line(identical: int, change: Paired, side: str) -> str:
    """"35 of 35 answers identical to 4d; combined 0.4909 served vs 0.4909 evaluated (+0.0000, 95 % CI …)"."""
    return (f"{identical} of {change.examples} answers identical to 4d; combined {change.after:.4f} {side} vs "
            f"{change.before:.4f} evaluated ({change.delta:+.4f}, {change.interval()})")


def significantly_worse(parity: dict, margin: float) -> bool:
    """The whole interval of the combined score's change below ``-margin``: worse than 4d beyond noise."""
    change = Paired.model_validate(parity["combined"])
    return change.high is not None and change.high < -margin
