"""Answers as server-sent events in OpenAI's chunk format, for /v1/chat/completions and /ask alike.

The pieces are stripped as a whole answer is (leading whitespace dropped, trailing whitespace held
back until more text follows), so a streamed answer joined is the text the same request gets
unstreamed, and 4d measured. An error after the first byte is a last ``{"error": ...}`` event
(what the openai SDK raises from), never a cut connection; a reader that goes away stops the
generation at once, not at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from serving.backends import BackendTimeout, Stream

DONE = b"data: [DONE]\n\n"


def event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class Stripped:
    """Pieces of text, with the whitespace at both ends of the whole left out."""

    def __init__(self) -> None:
        self.started, self.held = False, ""

    def __call__(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            self.started = bool(piece)
        text = self.held + piece
        body = text.rstrip()
        self.held = text[len(body):]
        return body


class EventStream(StreamingResponse):
    """Watches for the client leaving while it streams, whatever ASGI version the server speaks (starlette
    watches only below 2.4 and otherwise learns it when a write fails: at the next token, or never while the
    engine is still queueing). Leaving cancels the body, whose ``finally`` closes the backend's stream."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        super().__init__(body, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def respond() -> None:
                    with contextlib.suppress(OSError):  # the client is gone
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(respond)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:  # now, not when the garbage collector gets to it: the request's log line counts its tokens
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


async def chunks(stream: Stream, pieces: AsyncIterator[str], first: str | None, request_id: str, model: str,
                 include_usage: bool, ended: Callable[[Stream, str], None], error_body: Callable[[Exception], dict],
                 gap_s: float) -> AsyncIterator[bytes]:
    """OpenAI's chat.completion.chunk events for ``stream`` (``first``: its first piece, already read; None when
    it ended without one), ending in ``data: [DONE]``; at most ``gap_s`` between two pieces. ``ended`` gets the
    stream and how it ended: completed, cancelled (the reader left) or the error's kind."""
    base = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}

    def delta(content: dict, finish: str | None = None) -> bytes:
        return event({**base, "choices": [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]})

    strip, outcome = Stripped(), "cancelled"
    try:
        yield delta({"role": "assistant", "content": ""})
        piece = first
        while piece is not None:
            if text := strip(piece):
                yield delta({"content": text})
            try:
                async with asyncio.timeout(gap_s):
                    piece = await anext(pieces, None)
            except TimeoutError:
                raise BackendTimeout(f"no token for {gap_s:g} s (the gateway's request timeout)") from None
        yield delta({}, stream.finish_reason)
        if include_usage:
            yield event({**base, "choices": [], "usage": {
                "prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens,
                "total_tokens": stream.prompt_tokens + stream.completion_tokens}})
        outcome = "completed"
    except Exception as error:  # after the first byte the status is sent: the error is the last event
        outcome = type(error).__name__
        yield event(error_body(error))
    finally:
        stream.close()
        with anyio.CancelScope(shield=True):  # this may run in a cancelled task (the reader left)
            await stream.stopped()
        ended(stream, outcome)
    yield DONE
