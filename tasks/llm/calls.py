"""Calling an LLM: the run's limits on the provider, and asking until a reply is usable (once repaired).

Every stage that asks a model (stage 3's pairs and judge, 4d's grader) goes through one
``RateLimitedCaller``, so the quota, the retries on transient errors and the shared
Prefect rate limit hold for all of them; ``ask_with_repair`` is the one "ask, then ask again
once" loop, and ``ask_cached`` pays for each distinct prompt once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from aiolimiter import AsyncLimiter
from prefect.concurrency.asyncio import rate_limit
from pydantic import BaseModel, ValidationError

from core.config import DatasetGenerator
from core.files import atomic_write_json
from tasks.common.retry import backoff_delay
from tasks.llm.providers import Completion, LLMAuthError, LLMError, LLMProvider, TransientLLMError

T = TypeVar("T")
Reply = TypeVar("Reply", bound=BaseModel)


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


class AdaptiveSlots:
    """At most ``limit`` calls in flight, between 1 and ``ceiling`` (max_concurrent_requests): halved each time the
    server shows it is saturated (no token within the timeout, 429, 503), raised by one after ``limit`` calls in a
    row succeed: additive increase, multiplicative decrease, as TCP finds a link's capacity. A local server slower
    than the settings assume then gets fewer requests at once instead of timing them all out."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = self.limit = ceiling
        self.lowest = ceiling
        self._in_flight = self._successes = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def slot(self):
        async with self._changed:
            await self._changed.wait_for(lambda: self._in_flight < self.limit)
            self._in_flight += 1
        try:
            yield
        finally:
            async with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def saturated(self) -> None:
        if self.limit > 1:
            logging.getLogger(__name__).warning(
                "the LLM server is saturated (no token within the timeout, 429 or 503): %d requests in flight from now "
                "on, of max_concurrent_requests %d (raised again as calls succeed)", self.limit // 2, self.ceiling)
        self.limit = max(1, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        self._successes = 0

    def succeeded(self) -> None:
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.ceiling:
            self.limit, self._successes = self.limit + 1, 0


class RateLimitedCaller:
    """Bounded (and adaptive) concurrency, requests/min and tokens/min limits, retries with backoff on transient
    errors only.

    The limits above hold within one run. Runs of several deployments at once (the nightly
    refresh beside a manual run) share the provider's quota through ``shared_rate_limit``:
    each request also takes a slot of that Prefect-managed rate limit.
    """

    def __init__(self, provider: LLMProvider, policy: CallPolicy) -> None:
        self.provider = provider
        self.policy = policy
        self.slots = AdaptiveSlots(policy.max_concurrent)
        self.last_failure: TransientLLMError | None = None
        self._requests = AsyncLimiter(1, 60 / policy.requests_per_minute) if policy.requests_per_minute else None  # evenly spaced
        self._tokens = AsyncLimiter(policy.tokens_per_minute, 60) if policy.tokens_per_minute else None
        self.calls = 0

    async def __call__(self, system: str, prompt: str, schema: type[BaseModel]):
        estimate = (len(system) + len(prompt)) // 4 + 512
        for attempt in range(self.policy.max_retries + 1):
            async with self.slots.slot():
                if self._requests is not None:
                    await self._requests.acquire()
                if self._tokens is not None:
                    await self._tokens.acquire(min(estimate, self.policy.tokens_per_minute))
                if self.policy.shared_rate_limit is not None:
                    await rate_limit(self.policy.shared_rate_limit, strict=True)
                self.calls += 1
                try:
                    completion = await self.provider.complete(system, prompt, schema)
                except TransientLLMError as error:
                    if error.saturated:
                        self.slots.saturated()
                    if attempt == self.policy.max_retries:
                        self.last_failure = error
                        raise
                    delay = error.retry_after
                else:
                    self.slots.succeeded()
                    return completion
            await asyncio.sleep(backoff_delay(attempt, self.policy.backoff_base_s, self.policy.backoff_max_s, delay))
        raise AssertionError("unreachable")


@dataclass
class Asked(Generic[T]):
    """What asking gave: the usable value (or None), why each unusable reply was unusable, every completion paid
    for, and the provider error that ended the asking, if one did."""

    value: T | None
    problems: list[str] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    error: LLMError | None = None


async def ask_with_repair(call: RateLimitedCaller, system: str, prompt: str, schema: type[BaseModel],
                          read: Callable[[str], tuple[T | None, str | None]], repair_note: str | None = None) -> Asked[T]:
    """Ask; a reply ``read`` finds unusable (it returns the problem) is asked again once, with ``repair_note``
    (formatted with the problem) added to the prompt when given. An authentication error is raised (it stops the
    stage); any other provider error ends the asking and is returned."""
    asked: Asked[T] = Asked(None)
    for _ in range(2):
        try:
            completion = await call(system, prompt, schema)
        except LLMAuthError:
            raise
        except LLMError as error:
            asked.error = error
            return asked
        asked.completions.append(completion)
        value, problem = read(completion.text)
        if problem is None:
            asked.value = value
            return asked
        asked.problems.append(problem)
        if repair_note is not None:
            prompt = prompt + repair_note.format(reason=problem.replace("_", " "))
    return asked


async def ask_cached(call: RateLimitedCaller, system: str, prompt: str, schema: type[Reply],
                     cache_path: Path) -> Reply | None:
    """A reply valid against ``schema``, cached at ``cache_path``; an unusable one is asked again once, then None.

    An authentication error stops the stage; any other provider error gives None, and nothing is cached.
    """
    if cache_path.exists():
        return schema.model_validate_json(cache_path.read_text(encoding="utf-8"))

    def read(text: str) -> tuple[Reply | None, str | None]:
        try:
            return schema.model_validate(json.loads(text)), None
        except (json.JSONDecodeError, ValidationError):
            return None, "invalid_json"

    reply = (await ask_with_repair(call, system, prompt, schema, read)).value
    if reply is not None:
        atomic_write_json(cache_path, reply.model_dump())
    return reply


def remedy(error: TransientLLMError | None, g: DatasetGenerator, lowest_in_flight: int) -> str:
    """What to change when a failure will recur on a rerun as it is, or that a rerun is the fix."""
    kind = error.kind if error is not None else None
    if kind == "timeout":
        return (f"the server wrote no token for dataset_generator.request_timeout_s ({g.request_timeout_s:g} s) even "
                f"with {lowest_in_flight} request(s) in flight: raise request_timeout_s, or give it a faster model or "
                "machine; then rerun (finished groups are cached)")
    if kind == "rate_limited":
        return ("the provider's rate limit: lower dataset_generator.requests_per_minute or tokens_per_minute, then rerun "
                "(finished groups are cached)")
    if kind == "unreachable":
        return f"nothing answers at dataset_generator.base_url ({g.base_url}): start the server, then rerun"
    return "rerun to retry only the failed ones (finished groups are cached)"
