"""Correctness graded by the stage-3 provider: was each answer right, by the reference?

Overlap metrics reward wording; a grader reads meaning. Both models' answers to a question
go into one request, in an order drawn per question from a seeded hash, so a grader that
prefers the first (or second) answer favours neither model on average. Each grading is
cached by the content of its prompt, provider and model, like stage 3's calls: a rerun asks
for nothing already graded. Offline, the deterministic word-overlap grader of
``tasks.llm.offline`` answers, and the report says so.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from core import artifacts
from core.config import PipelineConfig
from core.prompts import GRADE_SYSTEM, grade_prompt
from core.results import EvaluationReport, Prediction
from tasks.common.paired import paired_difference
from tasks.llm.calls import CallPolicy, RateLimitedCaller, ask_cached
from tasks.llm.providers import make_provider

POINTS = {"correct": 1.0, "partially": 0.5, "incorrect": 0.0}


class Grade(BaseModel):
    grade: Literal["correct", "partially", "incorrect"]
    reason: str


class GradedPair(BaseModel):
    A: Grade
    B: Grade


def tuned_first(question_id: str, seed: int) -> bool:
    """Whether the fine-tuned answer is shown as A for this question: a seeded coin, the same on every run."""
    return hashlib.sha256(f"{seed}|{question_id}".encode()).digest()[0] < 128


async def grade_question(question: str, reference: str, baseline: str, tuned: str, first: bool,
                         call: RateLimitedCaller, cache_dir: Path) -> tuple[Grade, Grade] | None:
    """(baseline's grade, fine-tuned's grade), cached; None when the grader gave no usable reply (see ask_cached)."""
    shown = (tuned, baseline) if first else (baseline, tuned)
    prompt = grade_prompt(question, reference, *shown)
    key = artifacts.llm_cache_key("grades", call.provider.name, call.provider.model, prompt)
    graded = await ask_cached(call, GRADE_SYSTEM, prompt, GradedPair, artifacts.cache_entry(cache_dir, key))
    if graded is None:
        return None
    return (graded.B, graded.A) if first else (graded.A, graded.B)


async def grade_answers(baseline: list[Prediction], tuned: list[Prediction], call: RateLimitedCaller, cache_dir: Path,
                        seed: int) -> list[tuple[Grade, Grade] | None]:
    """Grades for every question of two evaluation reports' predictions (same questions, same order)."""
    return list(await asyncio.gather(*(
        grade_question(b.question, b.reference, b.prediction, t.prediction, tuned_first(b.id, seed),
                       call, cache_dir)
        for b, t in zip(baseline, tuned, strict=True))))


def grading_summary(ids: list[str], grades: list[tuple[Grade, Grade] | None], grader: str, offline: bool,
                    resamples: int, seed: int, confidence: float) -> dict:
    """Accuracy (partially = half) of both models on the questions graded, with the paired interval."""
    graded = [(qid, pair) for qid, pair in zip(ids, grades, strict=True) if pair is not None]
    if not graded:
        raise ValueError(f"the grader ({grader}) gave no usable grade for any of {len(ids)} questions")
    comparison = paired_difference([POINTS[b.grade] for _, (b, _) in graded], [POINTS[t.grade] for _, (_, t) in graded],
                         resamples, seed, confidence)
    counts = {side: {grade: sum(pair[i].grade == grade for _, pair in graded) for grade in POINTS}
              for i, side in enumerate(("baseline", "fine_tuned"))}
    return {"grader": grader, "offline": offline, "graded": len(graded), "failed": len(ids) - len(graded),
            "comparison": comparison.model_dump(),
            "description": f"{comparison.delta:+.3f}, {comparison.describe()}", "counts": counts,
            "grades": {qid: {"baseline": b.model_dump(), "fine_tuned": t.model_dump()} for qid, (b, t) in graded}}


def grade_test_answers(config: PipelineConfig, baseline: EvaluationReport, tuned: EvaluationReport) -> dict:
    """Correctness of both models' test answers (4a's and 4d's reports), graded by the stage-3 provider
    (``evaluation.judge``); the summary names the grader and how many questions it graded."""
    provider, e = make_provider(config.dataset_generator), config.evaluation
    caller = RateLimitedCaller(provider, CallPolicy.of(config.dataset_generator, config.orchestration.llm_rate_limit))

    async def grade() -> list:
        try:
            return await grade_answers(baseline.predictions, tuned.predictions, caller,
                                       artifacts.llm_cache(config, "grades"), e.seed)
        finally:
            await provider.aclose()

    grades = asyncio.run(grade())
    offline = provider.name == "offline"
    grader = ("the offline deterministic grader (word overlap with the reference, not an LLM)" if offline
              else f"{provider.name} ({provider.model})")
    return grading_summary([p.id for p in baseline.predictions], grades, grader, offline, e.resamples, e.seed,
                           e.confidence)
