"""Asking the backend for one request, whole or streamed: what /ask and /v1/chat/completions share.

Both count the request in flight for its model (an adapter is unloaded only once none is), bound
it by the gateway's request timeout (whole: the answer; streamed: the first piece, then each next
one), and record tokens, latency and time to the first token.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import Request

from serving.backends import BackendTimeout, Completion, Messages, Sampling, Stream
from serving.errors import openai_error
from serving.streaming import EventStream, StreamedAnswer


def _route(request: Request) -> str:
    return request.scope["route"].path


def _record(request: Request, model: str, prompt_tokens: int, completion_tokens: int, **extra: object) -> None:
    metrics = request.app.state.gateway.metrics
    metrics.tokens.labels("in").inc(prompt_tokens)
    metrics.tokens.labels("out").inc(completion_tokens)
    request.state.usage = {**(request.state.usage or {}), "prompt_tokens": prompt_tokens,
                           "completion_tokens": completion_tokens, "model": model, **extra}


async def answer(request: Request, model: str, messages: Messages, sampling: Sampling) -> Completion:
    state = request.app.state.gateway
    state.in_flight[model] += 1
    try:
        async with asyncio.timeout(state.settings.request_timeout_s):  # end to end: queueing for the model included
            completion = await state.backend.chat(model, messages, sampling)
    finally:
        state.in_flight[model] -= 1
    state.metrics.backend_latency.labels(state.backend.kind).observe(completion.backend_s)
    _record(request, model, completion.prompt_tokens, completion.completion_tokens)
    return completion


async def answer_streamed(request: Request, model: str, messages: Messages, sampling: Sampling,
                          include_usage: bool) -> EventStream:
    """The response once the first piece is there: until then a failure is still a status (404, 503, 504)."""
    state = request.app.state.gateway
    timeout_s, started = state.settings.request_timeout_s, time.perf_counter()
    state.in_flight[model] += 1
    stream: Stream | None = None
    try:
        async with asyncio.timeout(timeout_s):
            stream = await state.backend.stream(model, messages, sampling)
            pieces = aiter(stream)
            first = await anext(pieces, None)
    except BaseException as error:
        state.in_flight[model] -= 1
        if stream is not None:
            stream.close()
        if isinstance(error, TimeoutError):
            raise BackendTimeout(f"no answer started within the gateway's request timeout ({timeout_s:g} s)") from None
        raise
    state.metrics.first_token.labels(_route(request)).observe(time.perf_counter() - started)

    def ended(stream: Stream, outcome: str) -> None:
        state.in_flight[model] -= 1
        if outcome == "cancelled":
            state.metrics.errors.labels("client_gone").inc()
        elif outcome != "completed":
            state.metrics.errors.labels("stream_failed").inc()
        state.metrics.backend_latency.labels(state.backend.kind).observe(time.perf_counter() - started)
        _record(request, model, stream.prompt_tokens, stream.completion_tokens, stream=outcome)

    return EventStream(StreamedAnswer(stream, pieces, first, request.state.request_id, model, include_usage, ended,
                                      _error_event, timeout_s))


def _error_event(error: Exception) -> dict:
    """A failure after the first byte, as OpenAI's SDKs read it from a stream."""
    return openai_error(504 if isinstance(error, BackendTimeout) else 503, str(error))
