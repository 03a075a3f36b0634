"""From generated pairs to the dataset: dedup, optional judging, a leak-free split, output views.

The split is three-way and by source document: train (what the adapter learns), validation
(what picks its checkpoint) and test (what the reported scores come from), so the number
reported was never used to choose. It is stable: a document keeps the side it got, so a
refresh that adds documents never moves an existing document (and its questions) from one
side to another. New documents are placed so that each side's share of *pairs* comes as
close to its ratio as whole documents allow (documents differ in size by 10× and more: placed
by a hash alone, six manuals once gave training 31 % of the pairs at a 60 % ratio).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from datasketch import MinHash, MinHashLSH
from pydantic import BaseModel

from core.config import DatasetGenerator
from core.prompts import PROMPT_VERSION, system_prompt
from tasks.common.questions import problem, words
from tasks.common.records import Chunk
from tasks.dataset.contamination import contamination_line
from tasks.dataset.generate import Group, GroupResult, JudgeScores, cost_usd


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


def _minhash(text: str, num_perm: int) -> MinHash:
    found = words(text)
    shingles = set(found) | {f"{a} {b}" for a, b in itertools.pairwise(found)}
    signature = MinHash(num_perm=num_perm, seed=1)
    for shingle in sorted(shingles):
        signature.update(shingle.encode("utf-8"))
    return signature


def deduplicate(records: Iterable[QARecord], threshold: float = 0.8, num_perm: int = 128) -> tuple[list[QARecord], int, int]:
    """Drop exact (normalised) and near-duplicate questions; the first occurrence wins.

    LSH finds candidates at a looser threshold (it is probabilistic around its threshold);
    each candidate is then confirmed by its estimated Jaccard similarity.
    """
    lsh = MinHashLSH(threshold=max(0.3, threshold - 0.2), num_perm=num_perm)
    signatures: dict[str, MinHash] = {}
    exact: set[str] = set()
    kept: list[QARecord] = []
    n_exact = n_near = 0
    for record in records:
        key = _normalise(record.question)
        if key in exact:
            n_exact += 1
            continue
        signature = _minhash(record.question, num_perm)
        if any(signatures[other].jaccard(signature) >= threshold for other in lsh.query(signature)):
            n_near += 1
            continue
        exact.add(key)
        signatures[record.id] = signature
        lsh.insert(record.id, signature)
        kept.append(record)
    return kept, n_exact, n_near


SIDES = ("train", "validation", "test")
# documents shared out over several sides: a lone document (by chunk: no chunk's text is both learned and tested),
# or a single held-out document (by question: validation and test may share a chunk, training sees neither)
_SPREAD = {"chunks": SIDES, "held-out": ("validation", "test")}


def _score(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _interval(side: str, ratios: dict[str, float], sides: tuple[str, ...]) -> tuple[float, float]:
    """The part of [0, 1) whose hash scores go to ``side``, the ratios of ``sides`` rescaled to fill it."""
    total, low = sum(ratios[s] for s in sides), 0.0
    for name in sides:
        high = low + ratios[name] / total
        if name == side:
            return low, high
        low = high
    raise ValueError(side)


def _side_of(score: float, ratios: dict[str, float], sides: tuple[str, ...]) -> str:
    return next((s for s in sides if score < _interval(s, ratios, sides)[1]), sides[-1])


def _covers(value: str) -> tuple[str, ...]:
    return _SPREAD.get(value, (value,))


def _fill(sides: dict[str, str], movable: list[str], allowed: tuple[str, ...], scores: dict[str, float],
          ratios: dict[str, float]) -> None:
    """Give each side of ``allowed`` a document, moving only ``movable`` ones and only from sides that keep one."""
    for side in allowed:
        def covering(name: str) -> list[str]:
            return [doc for doc, value in sides.items() if name in _covers(value)]

        if covering(side):
            continue
        spare = [doc for doc in movable if sides[doc] in SIDES and len(covering(sides[doc])) > 1]
        if spare:
            low, high = _interval(side, ratios, allowed)
            sides[min(spare, key=lambda doc: (max(low - scores[doc], scores[doc] - high, 0.0), doc))] = side


def _balance(sides: dict[str, str], new: list[str], sizes: dict[str, int], scores: dict[str, float],
             ratios: dict[str, float]) -> None:
    """Place ``new`` documents, largest first, each on the side furthest below its share of all the pairs; the
    documents already placed count where they are (a shared-out one by its sides' ratios). Equal sizes go in
    the order of their seeded hash, and a tie between sides to the side the hash would have chosen."""
    have = dict.fromkeys(SIDES, 0.0)
    for doc, value in sides.items():
        spread = _covers(value)
        for side in spread:
            have[side] += sizes.get(doc, 0) * ratios[side] / sum(ratios[s] for s in spread)
    total = sum(sizes.get(doc, 0) for doc in sides) + sum(sizes.get(doc, 0) for doc in new)
    for doc in sorted(new, key=lambda d: (-sizes.get(d, 0), scores[d])):
        hashed = _side_of(scores[doc], ratios, SIDES)
        side = max(SIDES, key=lambda s: (round(ratios[s] * total - have[s], 9), s == hashed))
        sides[doc] = side
        have[side] += sizes.get(doc, 0)


def assign_documents(docs: list[str], ratios: dict[str, float], seed: int,
                     assigned: dict[str, str] | None = None, sizes: dict[str, int] | None = None) -> dict[str, str]:
    """Each document's side: "train", "validation", "test", or shared out over several ("chunks", "held-out").

    ``assigned`` holds the sides documents got in earlier runs: they never move, so a refresh adds documents
    without turning old test questions into training data (or back). A two-way split's held-out ("eval")
    documents are shared out between validation and test (a single one has its questions shared out);
    no document leaves train. New documents are placed by ``sizes`` (pairs per document) so that each side's
    share of pairs comes close to its ratio (``_balance``; without sizes, each counts as one), except that
    every side must get a document (new ones are moved for that, never old ones). A lone document is split by
    chunk; of two, the one the hash sends further from train is held out, its questions shared out between
    validation and test.
    """
    scores = {doc: _score(seed, doc) for doc in docs}
    sides = {doc: side for doc, side in (assigned or {}).items() if doc in scores}
    legacy = sorted(doc for doc, side in sides.items() if side == "eval")
    if len(legacy) == 1:
        sides[legacy[0]] = "held-out"
    elif legacy:
        held_out = _SPREAD["held-out"]
        sides.update({doc: _side_of(scores[doc], ratios, held_out) for doc in legacy})
        _fill(sides, legacy, held_out, scores, ratios)
    new = [doc for doc in docs if doc not in sides]
    if len(docs) == 1 and new:
        sides[new[0]] = "chunks"
    elif len(docs) == 2 and len(new) == 2:
        held = max(new, key=scores.__getitem__)
        sides.update({doc: "held-out" if doc == held else "train" for doc in new})
    elif new:
        _balance(sides, new, sizes or dict.fromkeys(docs, 1), scores, ratios)
        _fill(sides, new, SIDES, scores, ratios)
    return sides


def split_records(records: list[QARecord], ratios: dict[str, float], seed: int,
                  assigned: dict[str, str] | None = None) -> tuple[dict[str, list[QARecord]], dict[str, str]]:
    """Split by document (see ``assign_documents``); returns each side's records and every document's side.

    Train teaches the adapter, validation picks its checkpoint, test measures it: no question is on two sides,
    and only documents split by chunk have questions on more than one.
    """
    sizes = Counter(r.doc_sha256 for r in records)
    sides = assign_documents(sorted(sizes), ratios, seed, assigned, sizes)

    def side_of(record: QARecord) -> str:
        value = sides[record.doc_sha256]
        if value in _SPREAD:
            key = record.chunk_ids[0] if value == "chunks" else record.id
            return _side_of(_score(seed, key), ratios, _SPREAD[value])
        return value

    split: dict[str, list[QARecord]] = {side: [] for side in SIDES}
    for record in records:
        split[side_of(record)].append(record)
    return split, sides


def trains_on(chunk: Chunk, sides: dict[str, str], ratios: dict[str, float], seed: int) -> bool:
    """Whether ``chunk``'s text is on the training side: its document's, or its own where the document is split by chunk."""
    value = sides.get(chunk.doc_sha256)
    return value == "train" or (value == "chunks" and _side_of(_score(seed, chunk.id), ratios, SIDES) == "train")


def chat_view(record: QARecord, domain: str) -> dict:
    """The conversation stage 4 trains on: the shared system prompt, the question, the answer."""
    return {"id": record.id, "messages": [
        {"role": "system", "content": system_prompt(domain)},
        {"role": "user", "content": record.question},
        {"role": "assistant", "content": record.answer},
    ]}


def chat_jsonl(records: Iterable[QARecord], domain: str) -> str:
    """train_chat.jsonl's text: one conversation a line."""
    return "".join(json.dumps(chat_view(record, domain), ensure_ascii=False) + "\n" for record in records)


class SplitLevel(StrEnum):
    """How finely the split had to divide the source documents (stats.json's ``split.level``)."""

    DOCUMENT = "document"  # every document whole on one side
    CHUNK = "chunk"  # the only document when first split, divided by chunk across all three sides
    QUESTION = "question"  # the only held-out document, its questions shared out between validation and test

    @property
    def warning(self) -> str | None:
        """What a user should know about the scores of a split this fine; None for a document-level split."""
        return {
            SplitLevel.DOCUMENT: None,
            SplitLevel.CHUNK: ("a document is split by chunk (it was the only source document when first split): "
                               "its test and validation questions share a document with training questions"),
            SplitLevel.QUESTION: ("the only held-out document has its questions shared out between validation and test: "
                                  "the test questions share a document with those that chose the checkpoint "
                                  "(add source documents)"),
        }[self]


def split_level(sides: dict[str, str]) -> SplitLevel:
    values = set(sides.values())
    if "chunks" in values:
        return SplitLevel.CHUNK
    return SplitLevel.QUESTION if "held-out" in values else SplitLevel.DOCUMENT


@dataclass(frozen=True)
class GenerationRun:
    """What one run of stage 3 did, for stats.json."""

    provider: str
    model: str
    chunk_documents: list[str]  # the source document of every chunk
    groups: int
    cached: int  # groups whose result was cached before this run
    calls: int  # provider calls this run
    results: list[GroupResult]
    rejected: Counter[str]  # pairs dropped by the question rules, by reason
    exact_duplicates: int
    near_duplicates: int
    judge_rejected: int
    judge_failed: int


SHARE_TOLERANCE = 0.10  # a side's share of pairs this far from its ratio is worth a warning


def pair_shares(split: dict[str, list[QARecord]]) -> dict[str, float]:
    total = sum(len(records) for records in split.values()) or 1
    return {side: round(len(split[side]) / total, 4) for side in SIDES}


def shares_off(shares: dict[str, float], ratios: dict[str, float]) -> list[str]:
    """The sides whose share of pairs is more than ``SHARE_TOLERANCE`` from their ratio, as words."""
    return [f"{side} has {shares[side]:.0%} of the pairs for a ratio of {ratios[side]:.0%}" for side in SIDES
            if abs(shares[side] - ratios[side]) > SHARE_TOLERANCE + 1e-9]


def dataset_stats(g: DatasetGenerator, run: GenerationRun, split: dict[str, list[QARecord]], level: SplitLevel,
                  review: dict, contamination: dict) -> dict:
    """stats.json: where the pairs came from, what was dropped and why, the split, what the review left out,
    the contamination check, the tokens and their cost."""
    results = run.results
    dropped = sum((Counter(r.dropped) for r in results), run.rejected)
    tokens_in, tokens_out = sum(r.input_tokens for r in results), sum(r.output_tokens for r in results)
    records = [r for side in SIDES for r in split[side]]
    return {
        "provider": run.provider, "model": run.model, "prompt_version": PROMPT_VERSION,
        "offline_extractive": run.provider == "offline",
        "chunks": len(run.chunk_documents), "groups": run.groups, "groups_cached_before_run": run.cached,
        "groups_dropped": sum(r.status == "dropped" for r in results),
        "provider_calls_this_run": run.calls,
        "pairs_generated": sum(len(r.pairs) for r in results),
        "dropped_by_reason": dict(sorted(dropped.items())),
        "unusable_replies": dict(sorted(sum((Counter(r.unusable_replies) for r in results), Counter()).items())),
        "duplicates": {"exact": run.exact_duplicates, "near": run.near_duplicates},
        "judge": {"enabled": g.judge, "threshold": g.judge_threshold, "rejected": run.judge_rejected,
                  "failed": run.judge_failed},
        "pairs": len(records),
        "by_type": dict(sorted(Counter(r.type for r in records).items())),
        "split": {"level": level.value, "ratios": g.split.model_dump(), "shares": pair_shares(split),
                  "seed": g.seed, **{f"{side}_pairs": len(split[side]) for side in SIDES},
                  **{f"{side}_documents": len({r.doc_sha256 for r in split[side]}) for side in SIDES}},
        "review": review, "contamination": contamination,
        "usage": {run.provider: {"input_tokens": tokens_in, "output_tokens": tokens_out,
                                 "estimated_cost_usd": cost_usd(g, tokens_in, tokens_out)}},
        "source_documents": sorted(set(run.chunk_documents)),
    }


def dataset_caveats(stats: dict) -> list[str]:
    """What a reader of the scores should know about the dataset they were measured on, from stats.json."""
    split = stats.get("split", {})
    caveats = [f"Contamination check (stage 3): {contamination_line(stats['contamination'])}."] \
        if "contamination" in stats else []
    if (review := stats.get("review")) and (review["excluded_pairs"] or review["corrected"]):
        documents = review["excluded_documents"]
        caveats.append(f"Review: {review['excluded_pairs']} pairs left out (with {documents} whole "
                       f"document{'' if documents == 1 else 's'}), {review['corrected']} answers corrected "
                       "(data/qa_dataset/review.json).")
    if warning := SplitLevel(split.get("level", "document")).warning:
        caveats.append(f"Split: {warning}.")
    if "shares" in split and (off := shares_off(split["shares"], split["ratios"])):
        caveats.append(f"Split: {'; '.join(off)} (whole documents could not come closer).")
    return caveats
