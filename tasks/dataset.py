"""From generated pairs to the dataset: dedup, optional judging, a leak-free split, output views.

The split is by source document and stable: a document's side is decided by a seeded hash
of its sha256, so a refresh that adds documents never moves an existing document (and its
questions) between train and eval.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable

from datasketch import MinHash, MinHashLSH
from pydantic import BaseModel

from tasks.prompts import system_prompt

_WORDS = re.compile(r"[a-z0-9]+")


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


def record_id(doc_sha256: str, question: str, answer: str) -> str:
    return hashlib.sha256(f"{doc_sha256}|{question}|{answer}".encode()).hexdigest()[:16]


def _normalise(text: str) -> str:
    return " ".join(_WORDS.findall(text.lower()))


def _minhash(text: str, num_perm: int) -> MinHash:
    words = _WORDS.findall(text.lower())
    shingles = set(words) | {f"{a} {b}" for a, b in itertools.pairwise(words)}
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


def _score(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_records(records: list[QARecord], train_ratio: float, seed: int,
                  assigned: dict[str, str] | None = None) -> tuple[list[QARecord], list[QARecord], dict[str, str]]:
    """Split by document: each document is "train", "eval" or "chunks" (its chunks split by a seeded hash).

    ``assigned`` holds the sides documents got in earlier runs: they never move, so a refresh
    adds documents without turning old eval questions into training data (or back). A new
    document goes where its stable seeded hash sends it, except that both sides must get a
    document (the new ones are moved for that, never the old); a lone document is split by chunk.
    Returns train, eval and every document's side, to be kept for the next run.
    """
    docs = sorted({r.doc_sha256 for r in records})
    sides = {doc: side for doc, side in (assigned or {}).items() if doc in docs}
    new = [doc for doc in docs if doc not in sides]
    if len(docs) == 1 and new:
        sides[new[0]] = "chunks"
    elif new:
        scores = {doc: _score(seed, doc) for doc in new}
        sides.update({doc: "eval" if scores[doc] >= train_ratio else "train" for doc in new})
        taken = set(sides.values())
        if "chunks" not in taken and "eval" not in taken:
            sides[max(new, key=scores.__getitem__)] = "eval"
        elif "chunks" not in taken and "train" not in taken:
            sides[min(new, key=scores.__getitem__)] = "train"

    def is_eval(record: QARecord) -> bool:
        side = sides[record.doc_sha256]
        return side == "eval" or (side == "chunks" and _score(seed, record.chunk_ids[0]) >= train_ratio)

    train = [r for r in records if not is_eval(r)]
    evaluation = [r for r in records if is_eval(r)]
    return train, evaluation, sides


def chat_view(record: QARecord, domain: str) -> dict:
    """The conversation stage 4 trains on: the shared system prompt, the question, the answer."""
    return {"id": record.id, "messages": [
        {"role": "system", "content": system_prompt(domain)},
        {"role": "user", "content": record.question},
        {"role": "assistant", "content": record.answer},
    ]}
