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
from typing import Annotated, Literal, TypeVar

from aiolimiter import AsyncLimiter
from prefect.concurrency.asyncio import rate_limit
from pydantic import BaseModel, Field, ValidationError, create_model

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
from tasks.llm import LLMAuthError, LLMError, LLMProvider, TransientLLMError
from tasks.offline_llm import overlap
from tasks.records import Chunk
from tasks.retry import backoff_delay

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


def cache_key(group: Group, provider: str, model: str, prompt_version: str = PROMPT_VERSION) -> str:
    return hashlib.sha256(f"{group.key}|{provider}|{model}|{prompt_version}".encode()).hexdigest()


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


@dataclass(frozen=True)
class CallPolicy:
    """``dataset_generator``'s limits on calling the provider, and the shared rate limit's name."""

    max_concurrent: int
    requests_per_minute: int | None  # None: no rate limit (the offline provider makes no network call)
    tokens_per_minute: int | None
    max_retries: int
    backoff_base_s: float
    backoff_max_s: float
    shared_rate_limit: str | None  # a Prefect global concurrency limit with slot decay, shared by every run

    @classmethod
    def of(cls, g: DatasetGenerator, shared_rate_limit: str | None = None) -> CallPolicy:
        """The provider's limits; the offline provider calls no service, so no quota (or retry) applies to it."""
        offline = g.provider == "offline"
        return cls(max_concurrent=g.max_concurrent_requests, requests_per_minute=None if offline else g.requests_per_minute,
                   tokens_per_minute=None if offline else g.tokens_per_minute, max_retries=0 if offline else g.max_retries,
                   backoff_base_s=g.backoff_base_s, backoff_max_s=g.backoff_max_s,
                   shared_rate_limit=None if offline else shared_rate_limit)


class RateLimitedCaller:
    """Bounded concurrency, requests/min and tokens/min limits, retries with backoff on transient errors only.

    The limits above hold within one run. Runs of several deployments at once (the nightly
    refresh beside a manual run) share the provider's quota through ``shared_rate_limit``:
    each request also takes a slot of that Prefect-managed rate limit.
    """

    def __init__(self, provider: LLMProvider, policy: CallPolicy) -> None:
        self.provider = provider
        self.policy = policy
        self._slots = asyncio.Semaphore(policy.max_concurrent)
        self._requests = AsyncLimiter(1, 60 / policy.requests_per_minute) if policy.requests_per_minute else None  # evenly spaced
        self._tokens = AsyncLimiter(policy.tokens_per_minute, 60) if policy.tokens_per_minute else None
        self.calls = 0

    async def __call__(self, system: str, prompt: str, schema: type[BaseModel]):
        estimate = (len(system) + len(prompt)) // 4 + 512
        for attempt in range(self.policy.max_retries + 1):
            async with self._slots:
                if self._requests is not None:
                    await self._requests.acquire()
                if self._tokens is not None:
                    await self._tokens.acquire(min(estimate, self.policy.tokens_per_minute))
                if self.policy.shared_rate_limit is not None:
                    await rate_limit(self.policy.shared_rate_limit, strict=True)
                self.calls += 1
                try:
                    return await self.provider.complete(system, prompt, schema)
                except TransientLLMError as error:
                    if attempt == self.policy.max_retries:
                        raise
                    delay = error.retry_after
            await asyncio.sleep(backoff_delay(attempt, self.policy.backoff_base_s, self.policy.backoff_max_s, delay))
        raise AssertionError("unreachable")


async def generate_group(group: Group, call: RateLimitedCaller, domain: str, n_pairs: int,
                         min_overlap: float) -> GroupResult:
    """Ask for pairs; a malformed reply is repaired once by asking again, then the group is dropped and counted."""
    provider, model = call.provider.name, call.provider.model
    result = GroupResult(group_key=group.key, provider=provider, model=model, prompt_version=PROMPT_VERSION, status="ok")
    prompt = generation_prompt(domain, group.text, n_pairs)
    dropped: Counter[str] = Counter()
    for attempt in range(2):
        try:
            completion = await call(GENERATION_SYSTEM, prompt, reply_schema(n_pairs))
        except LLMAuthError:
            raise
        except TransientLLMError as error:
            return result.model_copy(update={"status": "failed", "error": str(error), "dropped": dict(dropped)})
        except LLMError as error:
            dropped["request_rejected"] += 1
            return result.model_copy(update={"status": "dropped", "error": str(error), "dropped": dict(dropped)})
        result.calls += 1
        result.input_tokens += completion.input_tokens
        result.output_tokens += completion.output_tokens
        pairs, pair_drops, problem = validate_reply(completion.text, group.text, min_overlap)
        dropped.update(pair_drops)
        if problem is None:
            return result.model_copy(update={"pairs": pairs, "dropped": dict(dropped)})
        result.unusable_replies[problem] = result.unusable_replies.get(problem, 0) + 1
        if attempt == 1:
            dropped[problem] += 1
            return result.model_copy(update={"status": "dropped", "error": f"unusable reply after a repair: {problem}",
                                             "dropped": dict(dropped)})
        prompt = prompt + REPAIR_NOTE.format(reason=problem.replace("_", " "))
    raise AssertionError("unreachable")


async def generate_all(groups: list[Group], call: RateLimitedCaller, cache_dir: Path, domain: str, n_pairs: int,
                       min_overlap: float, on_result: Callable[[GroupResult], None] | None = None) -> list[GroupResult]:
    """Results for every group, from the cache or from the LLM. Transient failures are returned, not cached.

    Every sibling is allowed to finish before an authentication error is raised, so no paid call is lost.
    """
    provider, model = call.provider.name, call.provider.model

    async def one(group: Group) -> GroupResult:
        path = cache_dir / f"{cache_key(group, provider, model)}.json"
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


Reply = TypeVar("Reply", bound=BaseModel)


async def ask_cached(call: RateLimitedCaller, system: str, prompt: str, schema: type[Reply],
                     cache_path: Path) -> Reply | None:
    """A reply valid against ``schema``, cached at ``cache_path``; an unusable one is asked again once, then None.

    An authentication error stops the stage; any other provider error gives None, and nothing is cached.
    """
    if cache_path.exists():
        return schema.model_validate_json(cache_path.read_text(encoding="utf-8"))
    for _ in range(2):
        try:
            completion = await call(system, prompt, schema)
        except LLMAuthError:
            raise
        except LLMError:
            return None
        try:
            reply = schema.model_validate(json.loads(completion.text))
        except (json.JSONDecodeError, ValidationError):
            continue
        atomic_write_json(cache_path, reply.model_dump())
        return reply
    return None


async def judge_one(source: str, question: str, answer: str, call: RateLimitedCaller, cache_path: Path) -> JudgeScores | None:
    """Score one pair (LLM-as-judge), cached; an unusable verdict is asked again once, then None."""
    return await ask_cached(call, JUDGE_SYSTEM, judge_prompt(source, question, answer), JudgeScores, cache_path)
