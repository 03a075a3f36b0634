"""Do held-out questions leak what training teaches? The longest run of words each one shares with training.

A validation or test pair that repeats a 13-word run of a training pair (or of the text the
training pairs were made from) measures recall, not what the adapter learned: the
decontamination rule of lm-evaluation-harness and NeMo, applied to our own split. The
longest shared run is exact (a suffix automaton over the training words), so a pair can be
judged by its number, not only by whether it crossed the line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tasks.common.questions import words

NGRAM = 13  # words: lm-evaluation-harness's decontamination n-gram


class LongestShared:
    """The longest run of words any text shares with one of ``sources`` (a suffix automaton of their words;
    each source ends in a separator of its own, so no run crosses from one source into the next)."""

    def __init__(self, sources: Iterable[str]) -> None:
        self._next: list[dict[int, int]] = [{}]
        self._link, self._length, self._last = [-1], [0], 0
        self._ids: dict[str, int] = {}
        for n, source in enumerate(sources):
            for word in words(source):
                self._extend(self._ids.setdefault(word, len(self._ids)))
            self._extend(-1 - n)

    def _state(self, transitions: dict[int, int], link: int, length: int) -> None:
        self._next.append(transitions)
        self._link.append(link)
        self._length.append(length)

    def _extend(self, symbol: int) -> None:
        nxt, link, length = self._next, self._link, self._length
        current = len(length)
        self._state({}, -1, length[self._last] + 1)
        state = self._last
        while state != -1 and symbol not in nxt[state]:
            nxt[state][symbol] = current
            state = link[state]
        if state == -1:
            link[current] = 0
        else:
            target = nxt[state][symbol]
            if length[state] + 1 == length[target]:
                link[current] = target
            else:
                clone = len(length)
                self._state(dict(nxt[target]), link[target], length[state] + 1)
                while state != -1 and nxt[state].get(symbol) == target:
                    nxt[state][symbol] = clone
                    state = link[state]
                link[target] = link[current] = clone
        self._last = current

    def __call__(self, text: str) -> int:
        best = matched = state = 0
        for word in words(text):
            symbol = self._ids.get(word)
            while state and symbol not in self._next[state]:
                state = self._link[state]
                matched = self._length[state]
            if symbol in self._next[state]:
                state, matched = self._next[state][symbol], matched + 1
            else:
                state = matched = 0
            best = max(best, matched)
        return best


@dataclass(frozen=True)
class Overlap:
    """One held-out pair's longest runs of words shared with the training pairs and with the training chunks."""

    id: str
    side: str
    with_pairs: int
    with_chunks: int

    @property
    def longest(self) -> int:
        return max(self.with_pairs, self.with_chunks)

    @property
    def contaminated(self) -> bool:
        return self.longest >= NGRAM


def check(held_out: dict[str, list[tuple[str, str, str]]], training_pairs: list[tuple[str, str]],
          training_chunks: list[str]) -> list[Overlap]:
    """Every held-out pair (side → [(id, question, answer)]) against the training pairs' questions and answers
    (each its own source) and the training chunks' text."""
    pairs = LongestShared(text for question, answer in training_pairs for text in (question, answer))
    chunks = LongestShared(training_chunks)
    return [Overlap(pair_id, side, max(pairs(question), pairs(answer)), max(chunks(question), chunks(answer)))
            for side, items in held_out.items() for pair_id, question, answer in items]


def summary(overlaps: list[Overlap], dropped: bool) -> dict:
    """stats.json's ``contamination``: the rule, how many pairs were checked and flagged per side, the flagged ones."""
    flagged = [o for o in overlaps if o.contaminated]
    sides = sorted({o.side for o in overlaps})
    return {"ngram": NGRAM, "checked": len(overlaps), "dropped": dropped,
            "flagged": {side: sum(o.side == side for o in flagged) for side in sides},
            "longest": max((o.longest for o in overlaps), default=0),
            "pairs": [{"id": o.id, "side": o.side, "with_pairs": o.with_pairs, "with_chunks": o.with_chunks}
                      for o in flagged]}


def contamination_line(summary: dict) -> str:
    """The check's outcome in words, for the CLI and the report's caveats."""
    flagged = sum(summary["flagged"].values())
    where = ", ".join(f"{n} {side}" for side, n in summary["flagged"].items() if n)
    if not flagged:
        return (f"none of {summary['checked']} validation/test pairs shares a run of {summary['ngram']} words with "
                f"training (longest {summary['longest']})")
    fate = "dropped (dataset_generator.decontaminate)" if summary["dropped"] else \
        "kept, flagged in stats.json (dataset_generator.decontaminate: true drops them)"
    return (f"{flagged} of {summary['checked']} validation/test pairs ({where}) share a run of {summary['ngram']}+ words "
            f"with training (longest {summary['longest']}): {fate}")
