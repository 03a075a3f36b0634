"""What a reviewer should look at first: pairs that are near-duplicates, vaguely worded, unsupported by their source
or sharing a long run of words with training. Deduplication and the question rules already dropped the clear cases;
these flags mark the borderline ones stage 3 kept, so a person decides."""

from __future__ import annotations

from tasks.common.questions import GROUNDING_STOP, VAGUE, WORD, overlap, words
from tasks.dataset.similar import NUM_PERM, NearIndex, signature

NEAR = 0.6  # alike content words (MinHash Jaccard) worth a look; stage 3 drops whole questions 0.8 alike
SUPPORTED = 0.8  # share of the answer's content words its source passage holds, below which it is flagged
_DEICTIC = frozenset("this these those above below following aforementioned former latter said".split())
_FILLER = VAGUE | frozenset("what why how when where who whom whose does do did should could would will so".split())


def _content_words(question: str) -> set[str]:
    return {w for w in words(question) if w not in GROUNDING_STOP | _FILLER}


def near_duplicates(pairs: list[tuple[str, str]], threshold: float = NEAR, num_perm: int = NUM_PERM) -> dict[str, str]:
    """id → the most similar earlier question's id, for questions whose content words are at least ``threshold``
    alike. Content words only: "What does GetString do?" and "What does abs do?" share a template, not a subject
    (compared on their whole wording, a fifth of a real manual's questions matched another that way)."""
    index, found = NearIndex(threshold, num_perm=num_perm), {}
    for pair_id, question in pairs:
        if not (content := _content_words(question)):
            continue
        alike = signature(content, num_perm)
        if (other := index.most_alike(alike)) is not None:
            found[pair_id] = other
        index.add(pair_id, alike)
    return found


def vague_wording(question: str) -> bool:
    """Points at text the reader does not see ("in this section", "the above") or names almost nothing."""
    return bool(_DEICTIC & set(words(question))) or not _content_words(question)


def highlights(answer: str, passage: str) -> list[tuple[int, int]]:
    """Where in ``passage`` the answer's content words are: (start, end) character offsets, in order."""
    wanted = {w for w in words(answer) if w not in GROUNDING_STOP}
    return [(m.start(), m.end()) for m in WORD.finditer(passage.lower()) if m.group() in wanted]


def pair_flags(question: str, answer: str, passage: str, duplicate_of: str | None,
               contamination: dict | None) -> dict:
    """The flags the review page shows for one pair (only those raised), each with what it rests on."""
    flags: dict = {}
    if duplicate_of:
        flags["near_duplicate"] = duplicate_of
    if vague_wording(question):
        flags["vague"] = True
    if (support := overlap(answer, passage)) < SUPPORTED:
        flags["not_in_source"] = round(support, 2)
    if contamination:
        flags["contamination"] = max(contamination["with_pairs"], contamination["with_chunks"])
    return flags
