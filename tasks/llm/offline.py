"""A deterministic, offline stand-in for an LLM: extractive QA pairs and overlap-based grading.

It is not a language model and does not pretend to be: every answer is a verbatim span
(one or two sentences) of the source, so it is grounded by construction, and questions are
built only where a sentence has a shape that makes a question a person would ask:
a definition ("X is a Y" → "What is X?"), a purpose ("X is used to …" → "What is X used
for?"), an instruction ("To do Y, run Z" → "How do you do Y?"), a stated reason ("X is
slow because …" → "Why is X slow?"). The question agrees in number with its subject as the
source does. Sentences that fit no shape give no question; a subject that is a pronoun or
a clause ("It is a …", "If the mesh is …") is left to the same checks every provider's
pairs go through (``tasks.common.questions``), which drop it and count why. Records it produces are labelled
``offline-extractive``. It reads only the prompt, exactly as a real model would, which lets
the offline profile and the tests run the real prompt → JSON → validation path.
"""

from __future__ import annotations

import json
import re

from tasks.common.metrics import token_f1
from tasks.common.questions import GROUNDING_STOP, VAGUE, overlap, problem

MODEL_NAME = "offline-extractive-2"  # the generator's version: part of every cache key

_SOURCE = re.compile(r"<source>\n(.*?)\n</source>", re.DOTALL)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_COPULA = re.compile(r"^(?P<subject>[A-Z][^,;:()]{1,60}?)\s+(?P<verb>is|are)\s+(?P<rest>.+)$")
_DEFINITION = re.compile(r"^(?:a|an|the|one of|used|called|known)\b", re.IGNORECASE)
_PURPOSE = re.compile(r"^(?:used|needed|required|designed|intended)\s+(?:to|for)\b", re.IGNORECASE)
_REASON = re.compile(r"^(?P<predicate>[a-z][\w-]*(?:\s+[a-z][\w-]*){0,3})\s+(?:because|so that|in order to)\s+", re.IGNORECASE)
# verbs that say what a thing does: "X returns Y" → "What does X return?", "Regular visits lower Y" → "What do regular
# visits do?" (the verb's form gives the subject's number, as the source has it)
_OBJECT_VERBS = frozenset("return contain include require create compute specify define measure produce print display "
                          "store list accept need cause prevent".split())
_VERBS = _OBJECT_VERBS | frozenset(
    "provide allow set control determine generate take write read load save remove add convert solve build check "
    "enable disable select describe indicate represent apply evaluate change reduce increase lower raise protect affect "
    "support help give make keep let start begin end last happen occur mean depend use show test screen estimate follow "
    "carry pass cross become grow move work run open close call".split())


def _base(verb: str) -> tuple[str, bool] | None:
    """(base form, singular subject) for a verb of ``_VERBS`` as it follows its subject; None for other words."""
    if verb in _VERBS:
        return verb, False
    for suffix, replacement in (("ies", "y"), ("es", ""), ("s", "")):
        if verb.endswith(suffix) and verb[: -len(suffix)] + replacement in _VERBS:
            return verb[: -len(suffix)] + replacement, True
    return None




def _action(sentence: str) -> tuple[str, str, bool] | None:
    """(subject, base verb, singular) for "Subject verb …", where the verb agrees with the subject; None otherwise.

    "Screening tests estimate …" is read with "estimate" as the verb ("tests" followed by a verb is a noun), and a
    plural verb needs a plural-looking subject ("A urine test screens …" is not "A urine" + "test").
    """
    words = sentence.split()
    for index in range(1, min(len(words) - 2, 9)):
        if any(c in words[index - 1] for c in ",;:()"):
            return None
        verb = _base(words[index])
        if verb is None:
            continue
        following = words[index + 1].lower()
        if verb[1] and (following in _VERBS or (_base(following) is not None and not _base(following)[1])):
            continue
        if not verb[1] and (not words[index - 1].endswith("s") or words[index - 1].endswith("ss")
                            or words[0].lower() in ("a", "an", "one", "each", "every")):
            continue  # "A urine test screens": "test" is no plural verb here, the subject goes on
        return " ".join(words[:index]), verb[0], verb[1]
    return None
_INSTRUCTION = re.compile(r"^To (?P<goal>[a-z][^,;:]{3,70}?),\s+(?P<rest>.+)$")
_VERBISH = re.compile(r"\b(?:is|are|was|were|be|been|has|have|had|do|does|did|can|will|would|should|must|may|means?|"
                      r"that|which|who|whom|whose)\b")
_ARTICLES = frozenset({"the", "a", "an"})
_SUBORDINATORS = frozenset("if when while although though because unless whether otherwise whenever".split())
_DANGLING = frozenset("with of to in on at for from by and or but as than".split())
_NOUNS_IN_LY = frozenset("family assembly supply reply poly anomaly rally".split())


def source_of(prompt: str) -> str:
    match = _SOURCE.search(prompt)
    return match.group(1) if match else ""


def noun_phrase(text: str, source: str) -> str | None:
    """``text`` as a question's subject; None when it holds a verb or a clause, is too long, or joins two sentences.

    Its first word keeps its capital only where it is a name: a capital inside it ("FreeFEM") or one it keeps in the
    middle of a sentence of the source ("the Gfem language").
    """
    words = text.split()
    if not 1 <= len(words) <= 8 or words[0].lower() in ("no", "not", "neither", "nor", "none"):
        return None
    if _VERBISH.search(text.lower()) or not any(w.lower() not in GROUNDING_STOP for w in words):
        return None
    if any(w.lower() in VAGUE for w in words[1:]):
        return None  # "doing them daily": a pronoun inside points at text the question does not carry
    lowered = [w.lower() for w in words]
    if (not any(c.isalpha() for c in words[0]) or set(lowered) & _SUBORDINATORS or lowered[-1] in _DANGLING
            or (lowered[0].endswith("ly") and lowered[0] not in _NOUNS_IN_LY)):
        return None  # "// Boolean operations", "Naturally if the files", "copying with", "otherwise the plugin"
    if any(w in ("The", "A", "An") for w in words[1:]) or re.match(r"(?:Note|Caution|Warning|Tip|Important)[A-Z]", text):
        return None  # "Preamble The GNU …", "CautionThere is …": a label run into the sentence after it
    first = words[0]
    is_name = any(c.isupper() for c in first[1:]) or re.search(rf"[a-z,;]\s+{re.escape(first)}\b", source)
    if first.lower() in _ARTICLES or not is_name:
        words[0] = first[0].lower() + first[1:]
    return " ".join(words)


def _question(sentence: str, source: str) -> tuple[str, str] | None:
    """(question, type) for a sentence with a shape that makes a good question, else None."""
    instruction = _INSTRUCTION.match(sentence)
    if instruction and not _VERBISH.search(instruction.group("goal")):
        return f"How do you {instruction.group('goal')}?", "how"
    copula = _COPULA.match(sentence)
    if not copula:
        action = _action(sentence)
        subject = noun_phrase(action[0], source) if action else None
        if subject is None:
            return None
        _, base, singular = action
        return f"What {'does' if singular else 'do'} {subject} {base if base in _OBJECT_VERBS else 'do'}?", "explain"
    subject = noun_phrase(copula.group("subject"), source)
    if subject is None:
        return None
    verb, rest = copula.group("verb"), copula.group("rest")
    if _PURPOSE.match(rest):
        return f"What {verb} {subject} used for?", "what"
    reason = _REASON.match(rest)
    if reason:
        return f"Why {verb} {subject} {reason.group('predicate')}?", "why"
    if _DEFINITION.match(rest):
        return f"What {verb} {subject}?", "what"
    return None


def _sentences(source: str) -> list[str]:
    found = []
    for paragraph in source.split("\n\n"):
        for sentence in _SENTENCE.split(" ".join(paragraph.split())):
            if 6 <= len(sentence.split()) <= 45 and sentence.endswith("."):
                found.append(sentence)
    return found


def extractive_pairs(source: str, n_pairs: int) -> list[dict[str, str]]:
    """Up to ``n_pairs`` pairs, one per sentence that makes a good question; two such subjects make a 'compare'."""
    made: list[tuple[str, str, str]] = []
    for sentence in _sentences(source):
        shaped = _question(sentence, source)
        if shaped is not None and all(q != shaped[0] for q, _, _ in made):
            made.append((shaped[0], shaped[1], sentence))
    pairs = [{"question": q, "answer": a, "type": t} for q, t, a in made[:n_pairs]]
    # a comparison names both things: only definitions whose own question passes the rules
    definitions = [(q, a) for q, t, a in made if t == "what" and not q.endswith("used for?") and problem(q, a) is None]
    if len(pairs) == n_pairs and len(definitions) >= 2 and n_pairs >= 3:
        (first_q, first_a), (second_q, second_a) = definitions[:2]
        first = first_q.split(" ", 2)[2].rstrip("?")
        second = second_q.split(" ", 2)[2].rstrip("?")
        pairs[-1] = {"question": f"How do {first} and {second} differ?", "answer": f"{first_a} {second_a}",
                     "type": "compare"}
    return pairs


def grade(source: str, question: str, answer: str) -> dict[str, float]:
    """Faithfulness from word overlap; usefulness favours answers in the ANSWER STYLE length."""
    words = len(answer.split())
    usefulness = 1.0 if 5 <= words <= 60 else 0.5 if words <= 100 else 0.2
    return {"faithfulness": round(overlap(answer, source), 3), "usefulness": usefulness}


_GRADED = re.compile(r"<reference>\n(.*?)\n</reference>\n<answer_A>\n(.*?)\n</answer_A>\n<answer_B>\n(.*?)\n</answer_B>",
                     re.DOTALL)


def grade_answer(reference: str, answer: str) -> dict[str, str]:
    """correct / partially / incorrect from the answer's token F1 with the reference: a word-overlap grader, no LLM."""
    f1 = token_f1(answer, reference)
    grade = "correct" if f1 >= 0.5 else "partially" if f1 >= 0.2 else "incorrect"
    return {"grade": grade, "reason": f"token F1 {f1:.2f} with the reference (offline word-overlap grader)"}


def respond(prompt: str, n_pairs: int | None = None) -> str:
    """The JSON reply to a generation, a judge or a grading prompt (the shapes of core.prompts)."""
    if graded := _GRADED.search(prompt):
        reference, first, second = graded.groups()
        return json.dumps({"A": grade_answer(reference, first), "B": grade_answer(reference, second)})
    source = source_of(prompt)
    if "\nQuestion: " in prompt and "\nAnswer: " in prompt:
        question = prompt.split("\nQuestion: ", 1)[1].split("\nAnswer: ", 1)[0]
        answer = prompt.split("\nAnswer: ", 1)[1]
        return json.dumps(grade(source, question, answer))
    wanted = n_pairs or int(re.search(r"Write (\d+) question-answer pairs", prompt).group(1))
    return json.dumps({"pairs": extractive_pairs(source, wanted)})
