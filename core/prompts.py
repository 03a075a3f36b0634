"""Prompts shared by dataset generation (stage 3) and evaluation/serving (stages 4 and 6).

The ANSWER STYLE block is the contract between the data and the model: the QA pairs are
written in it, the model is trained on them, and evaluation and serving ask for it in the
system prompt. One constant, imported everywhere, so the three can never drift apart.
Bump PROMPT_VERSION whenever a prompt's wording changes: it is part of every cache key.
"""

from __future__ import annotations

PROMPT_VERSION = "qa-v1"

QUESTION_TYPES = ("what", "why", "how", "compare", "explain")

ANSWER_STYLE = """ANSWER STYLE:
- Be concise and direct: answer exactly what was asked.
- Do not add explanations, examples, lists or background that were not requested.
- Keep answers brief and factual: one to three sentences."""

SYSTEM_PROMPT = f"You are a helpful assistant that answers questions about {{domain}}.\n\n{ANSWER_STYLE}"


def system_prompt(domain: str) -> str:
    """The system prompt used for evaluation, training examples and serving."""
    return SYSTEM_PROMPT.format(domain=domain)


Messages = list[dict[str, str]]


def conversation(system: str, question: str) -> Messages:
    """The messages evaluation and serving ask with: the system prompt, then the question."""
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


GENERATION_SYSTEM = (
    "You write question-answer pairs for fine-tuning a domain assistant. Every answer must be supported by the "
    "source text alone; never use outside knowledge.\n\n" + ANSWER_STYLE
)


def generation_prompt(domain: str, source_text: str, n_pairs: int) -> str:
    types = ", ".join(QUESTION_TYPES)
    return (
        f"Domain: {domain}\n"
        f"Write {n_pairs} question-answer pairs about the source text below. Spread the questions over these types: "
        f"{types}. A 'compare' question contrasts two things the text describes.\n"
        'Reply with JSON only: {"pairs": [{"question": "...", "answer": "...", "type": "what|why|how|compare|explain"}]}\n\n'
        f"<source>\n{source_text}\n</source>"
    )


REPAIR_NOTE = ("\n\nYour previous reply could not be used ({reason}). Reply again with valid JSON only, exactly in the "
               "requested shape, with non-empty questions and answers supported by the source text.")


JUDGE_SYSTEM = "You grade question-answer pairs for a fine-tuning dataset. Be strict and reply with JSON only."


def judge_prompt(source_text: str, question: str, answer: str) -> str:
    return (
        "Score the pair from 0 to 1 on two criteria.\n"
        "faithfulness: is every claim in the answer supported by the source text?\n"
        "usefulness: is the question something a person would ask, and does the answer fully answer it in the "
        "requested style?\n"
        'Reply with JSON only: {"faithfulness": 0.0, "usefulness": 0.0}\n\n'
        f"{ANSWER_STYLE}\n\n<source>\n{source_text}\n</source>\n\nQuestion: {question}\nAnswer: {answer}"
    )


GRADE_SYSTEM = ("You grade answers to a question against its reference answer. Judge whether each answer is right, "
                "not its style or length. Reply with JSON only.")


def grade_prompt(question: str, reference: str, first: str, second: str) -> str:
    """Two answers to one question, graded in one call; the caller decides which model's answer comes first."""
    return (
        "Grade answers A and B against the reference answer.\n"
        "correct: says what the reference says (other words are fine). partially: part of it, or with an error. "
        "incorrect: wrong, or does not answer the question.\n"
        'Reply with JSON only: {"A": {"grade": "correct|partially|incorrect", "reason": "one line"}, '
        '"B": {"grade": "...", "reason": "..."}}\n\n'
        f"Question: {question}\n<reference>\n{reference}\n</reference>\n"
        f"<answer_A>\n{first}\n</answer_A>\n<answer_B>\n{second}\n</answer_B>"
    )
