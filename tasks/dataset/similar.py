"""Near-duplicate text by MinHash: stage 3 drops questions alike in wording, the review flags pairs alike in
subject. One signature and one index for both, so "alike" is measured one way.

LSH finds candidates (it is probabilistic around its own threshold, so it may be set looser); each candidate is
then confirmed by its estimated Jaccard similarity.
"""

from __future__ import annotations

from collections.abc import Iterable

from datasketch import MinHash, MinHashLSH

NUM_PERM = 128


def signature(shingles: Iterable[str], num_perm: int = NUM_PERM) -> MinHash:
    found = MinHash(num_perm=num_perm, seed=1)
    for shingle in sorted(set(shingles)):
        found.update(shingle.encode("utf-8"))
    return found


class NearIndex:
    """The signatures added so far, asked for the most alike at or above ``threshold``."""

    def __init__(self, threshold: float, candidates_from: float | None = None, num_perm: int = NUM_PERM) -> None:
        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold if candidates_from is None else candidates_from, num_perm=num_perm)
        self._signatures: dict[str, MinHash] = {}

    def most_alike(self, found: MinHash) -> str | None:
        alike = [(self._signatures[other].jaccard(found), other) for other in self._lsh.query(found)]
        return max(alike)[1] if alike and max(alike)[0] >= self.threshold else None

    def add(self, key: str, found: MinHash) -> None:
        self._signatures[key] = found
        self._lsh.insert(key, found)
