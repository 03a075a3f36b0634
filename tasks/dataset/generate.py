"""Turn chunk groups into validated QA pairs, paying for each LLM call once.

Each group's outcome is written to its own cache file (keyed by the group's content, the
provider, the model and the prompt version) the moment it is final, so a rerun, a retried
flow run, or a refresh that adds documents calls the LLM only for groups not done yet —
and a process killed midway loses only the calls that were in flight.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError, create_model

from core import artifacts
from core.config import DatasetGenerator
from core.files import atomic_write_json
from core.prompts import (
    GENERATION_SYSTEM,
    JUDGE_SYSTEM,
    PROMPT_VERSION,
    QUESTION_TYPES,
    REPAIR_NOTE,
    generation_prompt,
    judge_prompt,
)
from tasks.common.questions import overlap
from tasks.common.records import Chunk
from tasks.llm.calls import RateLimitedCaller, ask_cached, ask_with_repair
from tasks.llm.providers import TransientLLMError

QuestionType = Literal["what", "why", "how", "compare", "explain"]
assert set(QUESTION_TYPES) == set(QuestionType.__args__)


class QAItem(BaseModel):
    question: str
    answer: str
    type: QuestionType


class QAResponse(BaseModel):
    pairs: list[QAItem]


MAX_QUESTION_CHARS, MAX_ANSWER_CHARS = 200, 400  # in what is asked for, not in what is accepted (QAItem)


@functools.cache
def reply_schema(n_pairs: int) -> type[QAResponse]:
    """The reply as requested: at most ``n_pairs`` pairs of bounded strings, so a decoder guided by the schema (vLLM's,
    Gemini's) closes every string and the list in time: a small model that repeats itself would otherwise write
    until max_tokens cuts the JSON off. Replies are validated against QAResponse itself."""
    item = create_model("QAItem", __base__=QAItem,
                        question=(Annotated[str, Field(max_length=MAX_QUESTION_CHARS)], ...),
                        answer=(Annotated[str, Field(max_length=MAX_ANSWER_CHARS)], ...))
    return create_model("QAResponse", __base__=QAResponse,
                        pairs=(Annotated[list[item], Field(min_length=1, max_length=n_pairs)], ...))


class JudgeScores(BaseModel):
    faithfulness: float = Field(ge=0, le=1)
    usefulness: float = Field(ge=0, le=1)


def cost_usd(g: DatasetGenerator, input_tokens: int, output_tokens: int) -> float:
    """What the tokens cost at the configured prices (nothing offline)."""
    if g.provider == "offline":
        return 0.0
    return round(input_tokens / 1e6 * g.input_price_per_mtok + output_tokens / 1e6 * g.output_price_per_mtok, 6)


@dataclass(frozen=True)
class Group:
    """Consecutive chunks of one document, sent to the LLM together."""

    key: str
    doc_sha256: str
    url: str | None
    chunk_ids: tuple[str, ...]
    text: str
    tokens: int


def group_chunks(chunks: list[Chunk], max_tokens: int) -> list[Group]:
    """Pack consecutive chunks of the same document up to ``max_tokens`` per group."""
    groups: list[Group] = []
    current: list[Chunk] = []

    def flush() -> None:
        if current:
            text = "\n\n".join(c.text for c in current)
            key = hashlib.sha256(text.encode("utf-8")).hexdigest()
            groups.append(Group(key, current[0].doc_sha256, current[0].url, tuple(c.id for c in current), text,
                                sum(c.tokens for c in current)))
            current.clear()

    for chunk in chunks:
        if current and (chunk.doc_sha256 != current[0].doc_sha256 or sum(c.tokens for c in current) + chunk.tokens > max_tokens):
            flush()
        current.append(chunk)
    flush()
    return groups


class GroupResult(BaseModel):
    """The final outcome of one group, as cached: its pairs, what was dropped and why, what it cost."""

    group_key: str
    provider: str
    model: str
    prompt_version: str
    status: Literal["ok", "dropped", "failed"]
    pairs: list[QAItem] = []
    dropped: dict[str, int] = {}
    unusable_replies: dict[str, int] = {}  # every reply that could not be used, repaired or not: why
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None


def group_entry(cache_dir: Path, group: Group, provider: str, model: str) -> Path:
    """Where a group's reply from ``provider``'s ``model`` is cached."""
    return artifacts.cache_entry(cache_dir, artifacts.llm_cache_key("groups", provider, model, group.key))


def validate_reply(text: str, source: str, min_overlap: float) -> tuple[list[QAItem], Counter[str], str | None]:
    """Parse a reply; returns usable pairs, per-pair drop reasons, and a reason if the reply as a whole is unusable."""
    try:
        reply = QAResponse.model_validate(json.loads(text))
    except json.JSONDecodeError:
        return [], Counter(), "invalid_json"
    except ValidationError:
        return [], Counter(), "missing_fields"
    kept: list[QAItem] = []
    dropped: Counter[str] = Counter()
    for pair in reply.pairs:
        pair = QAItem(question=" ".join(pair.question.split()), answer=" ".join(pair.answer.split()), type=pair.type)
        if not pair.question or not pair.answer:
            dropped["empty"] += 1
        elif overlap(pair.answer, source) < min_overlap:
            dropped["ungrounded"] += 1
        else:
            kept.append(pair)
    return kept, dropped, None if kept else ("no_valid_pairs" if reply.pairs else "empty_reply")


async def generate_group(group: Group, call: RateLimitedCaller, domain: str, n_pairs: int,
                         min_overlap: float) -> GroupResult:
    """Ask for pairs; a malformed reply is repaired once by asking again, then the group is dropped and counted."""
    provider, model = call.provider.name, call.provider.model
    result = GroupResult(group_key=group.key, provider=provider, model=model, prompt_version=PROMPT_VERSION, status="ok")
    dropped: Counter[str] = Counter()

    def read(text: str) -> tuple[list[QAItem], str | None]:
        pairs, pair_drops, problem = validate_reply(text, group.text, min_overlap)
        dropped.update(pair_drops)
        return pairs, problem

    asked = await ask_with_repair(call, GENERATION_SYSTEM, generation_prompt(domain, group.text, n_pairs),
                                  reply_schema(n_pairs), read, REPAIR_NOTE)
    result.calls = len(asked.completions)
    result.input_tokens = sum(c.input_tokens for c in asked.completions)
    result.output_tokens = sum(c.output_tokens for c in asked.completions)
    result.unusable_replies = dict(Counter(asked.problems))
    if isinstance(asked.error, TransientLLMError):
        return result.model_copy(update={"status": "failed", "error": str(asked.error), "dropped": dict(dropped)})
    if asked.error is not None:
        dropped["request_rejected"] += 1
        return result.model_copy(update={"status": "dropped", "error": str(asked.error), "dropped": dict(dropped)})
    if asked.value is None:
        dropped[asked.problems[-1]] += 1
        return result.model_copy(update={"status": "dropped", "error": f"unusable reply after a repair: {asked.problems[-1]}",
                                         "dropped": dict(dropped)})
    return result.model_copy(update={"pairs": asked.value, "dropped": dict(dropped)})


async def generate_all(groups: list[Group], call: RateLimitedCaller, cache_dir: Path, domain: str, n_pairs: int,
                       min_overlap: float, on_result: Callable[[GroupResult], None] | None = None) -> list[GroupResult]:
    """Results for every group, from the cache or from the LLM. Transient failures are returned, not cached.

    Every sibling is allowed to finish before an authentication error is raised, so no paid call is lost.
    """
    provider, model = call.provider.name, call.provider.model

    async def one(group: Group) -> GroupResult:
        path = group_entry(cache_dir, group, provider, model)
        if path.exists():
            return GroupResult.model_validate_json(path.read_text(encoding="utf-8"))
        result = await generate_group(group, call, domain, n_pairs, min_overlap)
        if result.status != "failed":
            atomic_write_json(path, result.model_dump(mode="json"))
        if on_result is not None:
            on_result(result)
        return result

    outcomes = await asyncio.gather(*(one(g) for g in groups), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return list(outcomes)


async def judge_one(source: str, question: str, answer: str, call: RateLimitedCaller, cache_path: Path) -> JudgeScores | None:
    """Score one pair (LLM-as-judge), cached; an unusable verdict is asked again once, then None."""
    return await ask_cached(call, JUDGE_SYSTEM, judge_prompt(source, question, answer), JudgeScores, cache_path)
