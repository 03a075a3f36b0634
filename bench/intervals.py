"""Benchmark: do stage 4's 95 % intervals hold 95 %? Coverage and width against Student's t, side by side.

    .venv/bin/python -m bench.intervals [--trials 400] [--resamples 2000]

Simulated test sets of the sizes stage 4 sees (per-question combined scores in [0, 1], a
known true change): for each, our paired percentile bootstrap interval (tasks.common.paired) and
the paired t-interval, an analytic reference that shares nothing with resampling, are
checked against the truth. Then, when reports/comparison.json exists, the last run's
headline: the interval the promotion gate decided on.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import stats

from harness.project import REPO
from tasks.common.paired import paired_difference


def simulate(n: int, trials: int, resamples: int, change: float = 0.03) -> dict[str, float]:
    rng = np.random.default_rng(n)
    ours = t_cover = 0
    widths = []
    for trial in range(trials):
        before = rng.beta(2, 3, n)  # skewed and bounded, like per-question scores
        after = before + change + rng.normal(0, 0.1, n)  # no clipping: the true mean change stays `change`
        c = paired_difference(before, after, resamples, seed=trial, confidence=0.95)
        low, high = stats.t.interval(0.95, n - 1, loc=np.mean(after - before), scale=stats.sem(after - before))
        ours += c.low <= change <= c.high
        t_cover += low <= change <= high
        widths.append((c.high - c.low) / (high - low))
    return {"ours": ours / trials, "t": t_cover / trials, "width_ratio": float(np.mean(widths))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    print(f"95 % intervals on {args.trials} simulated test sets per size (true change +0.03, noise sd 0.10); "
          f"goal: coverage ≈ 0.95\n")
    print(f"{'questions':>9}  {'bootstrap (ours)':>16}  {'Student t':>9}  {'width ours / t':>14}")
    for n in (10, 35, 100, 300):
        result = simulate(n, args.trials, args.resamples)
        print(f"{n:>9}  {result['ours']:>16.3f}  {result['t']:>9.3f}  {result['width_ratio']:>14.3f}")
    summary_path = REPO / "reports" / "comparison.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        print(f"\nlast run (reports/comparison.json): {summary['headline']}")


if __name__ == "__main__":
    main()
