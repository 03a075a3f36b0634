"""Answers as server-sent events in OpenAI's chunk format, for /v1/chat/completions and /ask alike.

The pieces are stripped as a whole answer is (leading whitespace dropped, trailing whitespace held
back until more text follows), so a streamed answer joined is the text the same request gets
unstreamed, and 4d measured. An error after the first byte is a last ``{"error": ...}`` event
(what the openai SDK raises from), never a cut connection; a reader that goes away stops the
generation at once, not at its next token.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from serving.backends import Stream

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


class StreamedAnswer:
    """One streamed answer as OpenAI's chat.completion.chunk events (``first``: its first piece, already read;
    None when it ended without one), ending in ``data: [DONE]`` (a silent engine is the backend's to time out: vLLM's
    stream after no token for the request timeout, the local generation at it). However it
    ends (completed, failed, its reader gone, or never started because the reader left first), ``finish`` stops
    the engine's generation and tells ``ended`` how, once."""

    def __init__(self, stream: Stream, pieces: AsyncIterator[str], first: str | None, request_id: str, model: str,
                 include_usage: bool, ended: Callable[[Stream, str], None],
                 error_body: Callable[[Exception], dict]) -> None:
        self.stream, self.pieces, self.first, self.include_usage = stream, pieces, first, include_usage
        self.ended, self.error_body = ended, error_body
        self.base = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model}
        self.outcome, self._finished = "cancelled", False

    def _delta(self, content: dict, finish: str | None = None) -> bytes:
        return event({**self.base, "choices": [{"index": 0, "delta": content, "logprobs": None,
                                                "finish_reason": finish}]})

    async def events(self) -> AsyncIterator[bytes]:
        stream, strip = self.stream, Stripped()
        try:
            yield self._delta({"role": "assistant", "content": ""})
            piece = self.first
            while piece is not None:
                if text := strip(piece):
                    yield self._delta({"content": text})
                piece = await anext(self.pieces, None)
            yield self._delta({}, stream.finish_reason)
            if self.include_usage:
                yield event({**self.base, "choices": [], "usage": {
                    "prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens,
                    "total_tokens": stream.prompt_tokens + stream.completion_tokens}})
            self.outcome = "completed"
        except Exception as error:  # after the first byte the status is sent: the error is the last event
            self.outcome = type(error).__name__
            yield event(self.error_body(error))
        finally:
            with anyio.CancelScope(shield=True):  # this may run in a cancelled task (the reader left)
                await self.finish()
        yield DONE

    async def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.stream.close()
        await self.stream.stopped()
        self.ended(self.stream, self.outcome)


class EventStream(StreamingResponse):
    """Watches for the client leaving while it streams, whatever ASGI version the server speaks (starlette
    watches only below 2.4 and otherwise learns it when a write fails: at the next token, or never while the
    engine is still queueing). Leaving cancels the events, and the answer's ``finish`` stops the engine."""

    media_type = "text/event-stream"

    def __init__(self, answer: StreamedAnswer) -> None:
        super().__init__(answer.events(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.answer = answer

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
                await self.answer.finish()
