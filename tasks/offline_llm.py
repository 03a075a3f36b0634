"""A deterministic, offline stand-in for an LLM: extractive QA pairs and overlap-based grading.

It is not a language model and does not pretend to be: questions come from templates
filled with a sentence's subject, and every answer is a verbatim span (one or two
sentences) of the source, so it is grounded by construction. Records it produces are
labelled ``offline-extractive``. It reads only the prompt, exactly as a real model would,
which lets the offline profile and the tests run the real prompt → JSON → validation path.
"""

from __future__ import annotations

import json
import re

from tasks.prompts import QUESTION_TYPES

MODEL_NAME = "offline-extractive"

_SOURCE = re.compile(r"<source>\n(.*?)\n</source>", re.DOTALL)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_SUBJECT = re.compile(
    r"^(?P<subject>[A-Z][^,;:]{2,60}?)\s+(?P<verb>is|are|can|should|may|must|needs?|helps?|includes?|causes?|"
    r"reduces?|contains?|lasts|lowers|supports|takes|gives|affects|passes|keeps)\b")
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the of to in on and or is are be for with by as at from that this it its can may".split())


def source_of(prompt: str) -> str:
    match = _SOURCE.search(prompt)
    return match.group(1) if match else ""


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def overlap(answer: str, source: str) -> float:
    """Share of the answer's content words that occur in the source (1.0 = fully supported)."""
    words = content_words(answer)
    if not words:
        return 0.0
    vocabulary = set(content_words(source))
    return sum(w in vocabulary for w in words) / len(words)


def _candidates(source: str) -> list[tuple[str, str, str]]:
    found = []
    for paragraph in source.split("\n\n"):
        for sentence in _SENTENCE.split(" ".join(paragraph.split())):
            match = _SUBJECT.match(sentence)
            if match and 6 <= len(sentence.split()) <= 45:
                found.append((match.group("subject"), match.group("verb"), sentence))
    return found


def _question(kind: str, subject: str, verb: str, other: str) -> str:
    topic = subject[0].lower() + subject[1:] if not subject[:2].isupper() else subject
    return {
        "what": f"What {verb} {topic}?" if verb in ("is", "are") else f"What is said about {topic}?",
        "why": f"Why is {topic} important?",
        "how": f"How is {topic} described?",
        "compare": f"How do {topic} and {other} compare?",
        "explain": f"Explain {topic}.",
    }[kind]


def extractive_pairs(source: str, n_pairs: int) -> list[dict[str, str]]:
    candidates = _candidates(source)
    pairs = []
    for index, (subject, verb, sentence) in enumerate(candidates[:n_pairs]):
        kind = QUESTION_TYPES[index % len(QUESTION_TYPES)]
        other_subject, _, other_sentence = candidates[(index + 1) % len(candidates)]
        if kind == "compare" and other_sentence != sentence:
            answer = f"{sentence} {other_sentence}"
        else:
            kind = "what" if kind == "compare" else kind
            answer = sentence
        pairs.append({"question": _question(kind, subject, verb, other_subject.lower()), "answer": answer, "type": kind})
    return pairs


def grade(source: str, question: str, answer: str) -> dict[str, float]:
    """Faithfulness from word overlap; usefulness favours answers in the ANSWER STYLE length."""
    words = len(answer.split())
    usefulness = 1.0 if 5 <= words <= 60 else 0.5 if words <= 100 else 0.2
    return {"faithfulness": round(overlap(answer, source), 3), "usefulness": usefulness}


def respond(prompt: str, n_pairs: int | None = None) -> str:
    """The JSON reply to a generation or a judge prompt (both shapes of tasks.prompts)."""
    source = source_of(prompt)
    if "\nQuestion: " in prompt and "\nAnswer: " in prompt:
        question = prompt.split("\nQuestion: ", 1)[1].split("\nAnswer: ", 1)[0]
        answer = prompt.split("\nAnswer: ", 1)[1]
        return json.dumps(grade(source, question, answer))
    wanted = n_pairs or int(re.search(r"Write (\d+) question-answer pairs", prompt).group(1))
    return json.dumps({"pairs": extractive_pairs(source, wanted)})
