"""Paired statistics: the verdicts follow the numbers, the intervals cover what they claim to."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tasks.common.paired import paired_difference
from tasks.finetune.comparison import selection_margin

SCORES = st.floats(0.0, 1.0, allow_nan=False)


def test_a_clear_gain_is_better_a_clear_loss_worse_and_no_change_is_said_so():
    rng = random.Random(3)
    before = [rng.random() for _ in range(40)]
    gain = paired_difference(before, [b + 0.05 + rng.gauss(0, 0.03) for b in before], 2000, seed=1, confidence=0.95)
    assert gain.verdict == "better" and gain.low > 0 and gain.p_value < 0.01
    assert gain.describe() == f"better (95 % CI {gain.low:+.3f} … {gain.high:+.3f})"
    loss = paired_difference(before, [b - 0.05 + rng.gauss(0, 0.03) for b in before], 2000, seed=1, confidence=0.95)
    assert loss.verdict == "worse" and loss.high < 0
    same = paired_difference(before, before, 2000, seed=1, confidence=0.95)
    assert (same.verdict, same.delta, same.p_value, same.ties, same.wins, same.losses) == (
        "no significant change", 0.0, 1.0, 40, 0, 0)
    noisy = paired_difference(before, [b + rng.gauss(0.01, 0.2) for b in before], 2000, seed=1, confidence=0.95)
    assert noisy.verdict == "no significant change" and noisy.low < 0 < noisy.high
    assert noisy.describe().startswith("no significant change (95 % CI -")


def test_the_same_scores_and_seed_give_the_same_numbers():
    rng = random.Random(5)
    before, after = [rng.random() for _ in range(25)], [rng.random() for _ in range(25)]
    first, again = (paired_difference(before, after, 3000, seed=7, confidence=0.95) for _ in range(2))
    assert first == again


def test_one_question_has_no_interval_and_mismatched_questions_are_refused():
    one = paired_difference([0.2], [0.6], 1000, seed=1, confidence=0.95)
    assert (one.low, one.high, one.p_value, one.verdict) == (None, None, 1.0, "no significant change")
    assert one.describe() == "no significant change (no interval: 1 question)"
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([0.1, 0.2], [0.3], 1000, seed=1, confidence=0.95)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(SCORES, SCORES), min_size=2, max_size=60), st.integers(0, 2**16))
def test_properties_of_any_paired_comparison(pairs, seed):
    before, after = [b for b, _ in pairs], [a for _, a in pairs]
    c = paired_difference(before, after, 1000, seed, 0.95)
    assert c.low <= c.delta + 1e-9 and c.delta <= c.high + 1e-9
    assert c.wins + c.ties + c.losses == len(pairs) and 0 < c.p_value <= 1
    assert c.delta == pytest.approx(np.mean(after) - np.mean(before), abs=1e-12)
    mirrored = paired_difference(after, before, 1000, seed, 0.95)  # the other way round: the same evidence, the sign flipped
    assert mirrored.delta == pytest.approx(-c.delta, abs=1e-12)
    assert (mirrored.low, mirrored.high) == pytest.approx((-c.high, -c.low), abs=1e-9)
    assert mirrored.p_value == pytest.approx(c.p_value) and (mirrored.wins, mirrored.losses) == (c.losses, c.wins)


def test_the_interval_agrees_with_students_t_where_that_is_exact():
    """A reference that shares nothing with resampling: for normal differences the t-interval and test are exact."""
    rng = np.random.default_rng(11)
    before = rng.uniform(0.2, 0.6, 300)
    after = before + rng.normal(0.02, 0.1, 300)
    c = paired_difference(before, after, 10000, seed=3, confidence=0.95)
    t_low, t_high = stats.t.interval(0.95, 299, loc=np.mean(after - before), scale=stats.sem(after - before))
    width = t_high - t_low
    assert abs(c.low - t_low) < 0.08 * width and abs(c.high - t_high) < 0.08 * width
    assert c.p_value == pytest.approx(stats.ttest_rel(after, before).pvalue, abs=0.01)


def test_ninety_five_percent_intervals_cover_the_true_change_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    trials, covered = 300, 0
    for trial in range(trials):
        before = rng.uniform(0.1, 0.7, 35)
        after = np.clip(before + rng.normal(0.03, 0.08, 35), 0, 1)
        truth = 0.03  # clipping at 0 and 1 moves it by well under the intervals' width here
        c = paired_difference(before, after, 1000, seed=trial, confidence=0.95)
        covered += c.low <= truth <= c.high
    assert 0.9 <= covered / trials <= 0.985, covered / trials


def test_the_chosen_checkpoint_is_compared_with_the_runner_up_on_the_same_questions():
    scores = {"checkpoint-10": [0.2, 0.3, 0.4, 0.5], "checkpoint-20": [0.3, 0.35, 0.5, 0.5],
              "checkpoint-30": [0.25, 0.3, 0.45, 0.5]}
    margin = selection_margin(scores, "checkpoint-20", 1000, seed=1, confidence=0.95)
    assert margin["runner_up"] == "checkpoint-30"
    assert margin["delta"] == pytest.approx(np.mean(scores["checkpoint-20"]) - np.mean(scores["checkpoint-30"]))
    assert selection_margin({"checkpoint-10": [0.1, 0.2]}, "checkpoint-10", 1000, seed=1, confidence=0.95) is None
