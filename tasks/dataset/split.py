"""The dataset's three-way split, by source document.

Train (what the adapter learns), validation (what picks its checkpoint) and test (what the reported scores come
from), so the number reported was never used to choose. It is stable: a document keeps the side it got, so a
refresh that adds documents never moves an existing document (and its questions) from one side to another. New
documents are placed so that each side's share of *pairs* comes as close to its ratio as whole documents allow
(documents differ in size by 10× and more: placed by a hash alone, six manuals once gave training 31 % of the
pairs at a 60 % ratio).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from enum import StrEnum

from tasks.common.records import Chunk
from tasks.dataset.pairs import QARecord

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
