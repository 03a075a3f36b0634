"""How sure a difference between two models is, when both answered the same questions.

Questions differ far more from each other than two models differ on one question, so the
comparison is paired: per question, the after-score minus the before-score. The interval
is a percentile bootstrap of the mean difference (sacreBLEU's paired bootstrap), the
p-value a paired permutation test (each question's two scores swapped or not: approximate
randomisation), both by scipy and seeded, so the same scores always give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, computed_field
from scipy import stats

Verdict = Literal["better", "worse", "no significant change"]


class Paired(BaseModel):
    """One metric, before vs after, on the same questions."""

    before: float
    after: float
    delta: float
    low: float | None  # the interval's bounds; None with fewer than two questions (no interval to draw)
    high: float | None
    p_value: float
    confidence: float
    resamples: int
    examples: int
    wins: int
    ties: int
    losses: int

    @computed_field  # written with the numbers (model_dump), so every report reads the same word
    @property
    def verdict(self) -> Verdict:
        if self.low is not None and self.low > 0:
            return "better"
        if self.high is not None and self.high < 0:
            return "worse"
        return "no significant change"

    def interval(self) -> str:
        if self.low is None or self.high is None:
            return f"no interval: {self.examples} question"
        return f"{self.confidence * 100:g} % CI {self.low:+.3f} … {self.high:+.3f}"

    def describe(self) -> str:
        """"better (95 % CI +0.021 … +0.067)", "no significant change (95 % CI −0.010 … +0.080)"."""
        return f"{self.verdict} ({self.interval()})"


def paired_difference(before: Sequence[float], after: Sequence[float], resamples: int, seed: int,
            confidence: float) -> Paired:
    """Mean difference ``after - before`` with its paired bootstrap interval and permutation p-value."""
    if len(before) != len(after) or len(before) == 0:
        raise ValueError(f"a paired comparison needs the same questions on both sides ({len(before)} vs {len(after)})")
    x, y = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    differences = y - x
    same = np.isclose(differences, 0.0, atol=1e-9)
    low = high = None
    if len(differences) >= 2:
        if np.ptp(differences) == 0:  # every question moved by the same amount: nothing to resample
            low = high = float(differences[0])
        else:
            bootstrap = stats.bootstrap((differences,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                        method="percentile", rng=np.random.default_rng(seed))
            low, high = float(bootstrap.confidence_interval.low), float(bootstrap.confidence_interval.high)
    if same.all() or len(differences) < 2:
        p_value = 1.0  # no difference, or one question: nothing to test
    else:
        permutation = stats.permutation_test((y, x), lambda a, b, axis: np.mean(a - b, axis=axis), vectorized=True,
                                             permutation_type="samples", n_resamples=resamples,
                                             rng=np.random.default_rng(seed))
        p_value = float(permutation.pvalue)
    return Paired(before=float(x.mean()), after=float(y.mean()), delta=float(differences.mean()), low=low, high=high,
                  p_value=p_value, confidence=confidence, resamples=resamples, examples=len(differences),
                  wins=int(((differences > 0) & ~same).sum()), ties=int(same.sum()),
                  losses=int(((differences < 0) & ~same).sum()))


def paired_differences(before: list[dict[str, float]], after: list[dict[str, float]], names: Sequence[str], resamples: int,
                seed: int, confidence: float) -> dict[str, Paired]:
    """``compare`` for each metric of per-question score dicts (same questions, same order)."""
    return {name: paired_difference([s[name] for s in before], [s[name] for s in after], resamples, seed, confidence)
            for name in names}
