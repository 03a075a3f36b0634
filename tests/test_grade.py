"""4d's optional grader through the real Gemini client (loopback server): order drawn per question, grades mapped back."""

from __future__ import annotations

import asyncio
import re

import pytest
from pydantic import SecretStr

from core.config import DatasetGenerator
from core.results import Prediction
from harness.llm import LLMFaults, fake_llm
from tasks.finetune.grade import grade_answers, grading_summary, tuned_first
from tasks.llm.calls import CallPolicy, RateLimitedCaller
from tasks.llm.offline import grade_answer
from tasks.llm.providers import GeminiProvider

KEY = "grade-key"
FAST = CallPolicy.of(DatasetGenerator(max_concurrent_requests=4, requests_per_minute=6000, max_retries=2, backoff_base_s=0.01,
                                      backoff_max_s=1))


def predictions(n: int, answer) -> list[dict]:
    return [{"id": f"q{i}", "question": f"What is item {i}?", "reference": f"Item {i} is a small blue sphere.",
             "prediction": answer(i)} for i in range(n)]


def typed(found: list[dict]) -> list[Prediction]:
    """As 4a's and 4d's reports hold them (their scores play no part in grading)."""
    return [Prediction.model_validate({**p, "scores": {}}) for p in found]


BASELINE = predictions(24, lambda i: "A large red cube." if i % 3 else f"Item {i} is a sphere.")  # 8 correct
TUNED = predictions(24, lambda i: f"Item {i} is a small blue sphere." if i % 4 else "No idea.")  # 18 correct


def grade(server, cache, policy=FAST):
    provider = GeminiProvider(SecretStr(KEY), "gemini-2.5-flash", server.url, timeout_s=30)  # not about timeouts: a busy machine

    async def go():
        try:
            return await grade_answers(typed(BASELINE), typed(TUNED), RateLimitedCaller(provider, policy), cache, seed=42)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_both_answers_are_graded_in_a_seeded_order_and_mapped_back(tmp_path):
    with fake_llm("gemini", KEY) as server:
        grades = grade(server, tmp_path)
        prompts = list(server.prompts)
    assert len(prompts) == 24  # one request per question, both answers in it
    firsts = [tuned_first(p["id"], 42) for p in TUNED]
    assert 6 <= sum(firsts) <= 18  # the fine-tuned answer is shown first for some questions, second for others
    shown_first = {re.search(r"Question: (.*)\n", p).group(1): re.search(r"<answer_A>\n(.*?)\n</answer_A>", p).group(1)
                   for p in prompts}
    for base, tuned, first in zip(BASELINE, TUNED, firsts, strict=True):
        assert shown_first[base["question"]] == (tuned["prediction"] if first else base["prediction"])
    for (b, t), base, tuned in zip(grades, BASELINE, TUNED, strict=True):  # each grade belongs to its own answer
        assert b.grade == grade_answer(base["reference"], base["prediction"])["grade"]
        assert t.grade == grade_answer(tuned["reference"], tuned["prediction"])["grade"]

    with fake_llm("gemini", KEY) as again:  # cached by content: a rerun asks for nothing
        assert grade(again, tmp_path) == grades and again.prompts == []

    summary = grading_summary([p["id"] for p in TUNED], grades, "gemini (gemini-2.5-flash)", False, 2000, 1, 0.95)
    assert summary["counts"]["fine_tuned"]["correct"] == 18 and summary["counts"]["baseline"]["correct"] == 8
    assert summary["comparison"]["verdict"] == "better" and summary["failed"] == 0
    assert summary["grades"]["q1"]["fine_tuned"]["reason"].startswith("token F1 1.00")


def test_an_unusable_grade_is_asked_again_then_left_out_and_counted(tmp_path):
    with fake_llm("gemini", KEY, faults=LLMFaults(first_ask="malformed")) as server:
        repaired = grade(server, tmp_path / "repaired")
        assert len(server.prompts) == 48 and all(g is not None for g in repaired)  # each asked once more
    with fake_llm("gemini", KEY, faults=LLMFaults(["malformed"] * 48)) as server:
        dropped = grade(server, tmp_path / "dropped")
    assert all(g is None for g in dropped) and not list((tmp_path / "dropped").glob("*.json"))  # nothing cached
    ids = [p["id"] for p in TUNED]
    summary = grading_summary(ids, [None, *repaired[1:]], "gemini", False, 2000, 1, 0.95)
    assert (summary["graded"], summary["failed"]) == (23, 1) and "q0" not in summary["grades"]
    with pytest.raises(ValueError, match="no usable grade for any of 24 questions"):
        grading_summary(ids, dropped, "gemini", False, 2000, 1, 0.95)
