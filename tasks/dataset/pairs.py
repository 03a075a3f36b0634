"""Stage 3's pairs as dataset records: the question rules, the judge's verdict and deduplication applied."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel

from tasks.common.questions import problem, words
from tasks.dataset.generate import Group, GroupResult, JudgeScores
from tasks.dataset.similar import NUM_PERM, NearIndex, signature


class QARecord(BaseModel):
    id: str
    question: str
    answer: str
    type: str
    chunk_ids: list[str]
    doc_sha256: str
    url: str | None
    provider: str
    model: str
    prompt_version: str
    judge: dict[str, float] | None = None
    original_answer: str | None = None  # as generated, when a reviewer corrected ``answer`` (data/qa_dataset/review.json)


def record_id(doc_sha256: str, question: str, answer: str) -> str:
    return hashlib.sha256(f"{doc_sha256}|{question}|{answer}".encode()).hexdigest()[:16]


def records_from(groups: list[Group], results: list[GroupResult]) -> tuple[list[QARecord], dict[str, str], Counter[str]]:
    """Each usable pair as a record, the source text it came from (by record id, for the judge), and how many
    pairs were rejected by reason. Checked here, not when cached: a stricter rule needs no new LLM calls."""
    records: list[QARecord] = []
    sources: dict[str, str] = {}
    rejected: Counter[str] = Counter()
    for group, result in zip(groups, results, strict=True):
        for pair in result.pairs:
            if reason := problem(pair.question, pair.answer):
                rejected[reason] += 1
                continue
            record = QARecord(id=record_id(group.doc_sha256, pair.question, pair.answer), question=pair.question,
                              answer=pair.answer, type=pair.type, chunk_ids=list(group.chunk_ids),
                              doc_sha256=group.doc_sha256, url=group.url, provider=result.provider,
                              model=result.model, prompt_version=result.prompt_version)
            records.append(record)
            sources[record.id] = group.text
    return records, sources, rejected


def keep_judged(records: list[QARecord], scores: list[JudgeScores | None],
                threshold: float) -> tuple[list[QARecord], tuple[int, int]]:
    """The records the judge scored at least ``threshold`` on both counts (scores attached), and (how many it
    rejected, how many it could not score: dropped too, unjudged is not judged good)."""
    kept, rejected, failed = [], 0, 0
    for record, score in zip(records, scores, strict=True):
        if score is None:
            failed += 1
        elif min(score.faithfulness, score.usefulness) >= threshold:
            kept.append(record.model_copy(update={"judge": score.model_dump()}))
        else:
            rejected += 1
    return kept, (rejected, failed)


def _normalise(text: str) -> str:
    return " ".join(words(text))


def _shingles(text: str) -> set[str]:
    found = words(text)
    return set(found) | {f"{a} {b}" for a, b in itertools.pairwise(found)}


def deduplicate(records: Iterable[QARecord], threshold: float = 0.8, num_perm: int = NUM_PERM) -> tuple[list[QARecord], int, int]:
    """Drop exact (normalised) and near-duplicate questions (words and word pairs); the first occurrence wins."""
    index = NearIndex(threshold, candidates_from=max(0.3, threshold - 0.2), num_perm=num_perm)
    exact: set[str] = set()
    kept: list[QARecord] = []
    n_exact = n_near = 0
    for record in records:
        key = _normalise(record.question)
        if key in exact:
            n_exact += 1
            continue
        found = signature(_shingles(record.question), num_perm)
        if index.most_alike(found) is not None:
            n_near += 1
            continue
        exact.add(key)
        index.add(record.id, found)
        kept.append(record)
    return kept, n_exact, n_near
