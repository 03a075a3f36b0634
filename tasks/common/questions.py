"""What makes a generated question unusable, whichever provider wrote it.

A question a person would ask names what it is about. "Why is this important?", "How is
there described?" or "Explain these." point at text the reader of the dataset (and the
model at serving time) never sees. A question that already holds its answer teaches
nothing. Each rule returns the reason a pair is dropped; the reasons are counted in
``stats.json``.
"""

from __future__ import annotations

import re

# words that cannot stand as the subject of a question without the source in view
VAGUE = frozenset(
    "there these those they them it its this that he she him her we us i one ones such both each all some any "
    "another other others here which what who former latter above below following same".split())
# words that open a clause, not a noun phrase: "Why is if the mesh fine?", "What is in this case the default?"
CLAUSE_OPENERS = frozenset(
    "if when while although though because since once unless until after before as where whereas in on at for from "
    "with without by into onto of to during under over between through however then thus hence also so but and or "
    "note see every whenever whether wherever".split())
_OPENING = re.compile(
    r"^(?:what|why|how|when|where|who|which|whom|whose)(?:\s+(?:is|are|was|were|do|does|did|can|could|should|would|"
    r"will|may|might|must|has|have|had))?\s+(?P<subject>[\w'-]+)", re.IGNORECASE)
_DIRECTIVE = re.compile(r"^(?:explain|describe|compare|summari[sz]e|discuss|define)\s+(?P<subject>[\w'-]+)", re.IGNORECASE)
WORD = re.compile(r"[a-z0-9]+")  # a word, for every rule that counts words (lower-cased text)
_STOP = frozenset(
    "a an the of to in on and or is are be for with by as at from that this it its can may what why how which who "
    "does do did when where was were will would should could".split())


# words an answer shares with any text: they say nothing about whether the source supports it
GROUNDING_STOP = frozenset(
    "a an the of to in on and or is are be for with by as at from that this it its can may".split())


def words(text: str) -> list[str]:
    """The text's words, lower-cased: what overlap, duplicates, flags and contamination compare."""
    return WORD.findall(text.lower())


def overlap(answer: str, source: str) -> float:
    """Share of the answer's content words that occur in the source (1.0 = fully supported): below
    ``dataset_generator.min_answer_overlap`` a pair is dropped as ungrounded."""
    said = [w for w in words(answer) if w not in GROUNDING_STOP]
    if not said:
        return 0.0
    vocabulary = {w for w in words(source) if w not in GROUNDING_STOP}
    return sum(w in vocabulary for w in said) / len(said)


def _content(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOP}


def vague_reference(question: str) -> bool:
    """Its subject, or its last word, is a pronoun or a bare determiner ("Why is this important?", "How do you prevent this?")."""
    asked = words(question)
    return _subject(question) in VAGUE or (bool(asked) and asked[-1] in VAGUE)


def _subject(question: str) -> str | None:
    match = _OPENING.match(question.strip()) or _DIRECTIVE.match(question.strip())
    return match.group("subject").lower() if match else None


def clause_subject(question: str) -> bool:
    """A clause pasted where the subject belongs ("Why is if the file is missing important?")."""
    return _subject(question) in CLAUSE_OPENERS


def answer_in_question(question: str, answer: str) -> bool:
    """Nothing in the answer goes beyond the question: it is asked and answered in the same words."""
    asked = " ".join(words(question))
    said = " ".join(words(answer))
    return bool(said) and (said in asked or not (_content(answer) - _content(question)))


def problem(question: str, answer: str) -> str | None:
    """The reason this pair is unusable, or None."""
    if vague_reference(question):
        return "vague_reference"
    if clause_subject(question):
        return "clause_subject"
    if answer_in_question(question, answer):
        return "answer_in_question"
    return None
