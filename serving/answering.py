"""Asking the backend for one request, whole or streamed: what /ask and /v1/chat/completions share.

Both count the request in flight for its model (an adapter is unloaded only once none is), bound
it by the gateway's request timeout (whole: the answer; streamed: the first piece, then the backend's
own bound on a silent engine), and record tokens, latency and time to the first token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import Request, Response

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
                          include_usage: bool) -> Response:
    """The response once the first piece is there: until then a failure is still a status (404, 503, 504), and a
    client that leaves while it waits (queued behind others) takes its request out of the engine at once."""
    state = request.app.state.gateway
    timeout_s, started = state.settings.request_timeout_s, time.perf_counter()
    stream: Stream | None = None

    async def opened() -> tuple[AsyncIterator[str], str | None]:
        nonlocal stream
        stream = await state.backend.stream(model, messages, sampling)
        pieces = aiter(stream)
        return pieces, await anext(pieces, None)

    def release() -> None:
        state.in_flight[model] -= 1
        if stream is not None:
            stream.close()

    state.in_flight[model] += 1
    start, left = asyncio.ensure_future(opened()), asyncio.ensure_future(_client_left(request))
    try:
        done, _ = await asyncio.wait({start, left}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if start not in done:
            start.cancel()  # the engine's request with it: vLLM aborts it, the local generation stops
            await asyncio.wait({start})
            if left not in done:
                raise BackendTimeout(f"no answer started within the gateway's request timeout ({timeout_s:g} s)")
        else:
            pieces, first = start.result()
    except BaseException:
        release()
        raise
    finally:
        left.cancel()
    if start not in done:  # the client left before the first token
        release()
        state.metrics.errors.labels("client_gone").inc()
        _record(request, model, 0, 0, stream="cancelled")
        return Response(status_code=499)  # nobody reads it: nginx's "client closed request", for the log
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
                                      _error_event))


async def _client_left(request: Request) -> None:
    """Returns when the client disconnects (its body is read already: nothing else comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error_event(error: Exception) -> dict:
    """A failure after the first byte, as OpenAI's SDKs read it from a stream."""
    return openai_error(504 if isinstance(error, BackendTimeout) else 503, str(error))
