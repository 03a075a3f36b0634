"""Gemini's and OpenAI's HTTP APIs with fault injection (stage 3's provider, 4d's grader)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from harness.loopback import LoopbackServer


class LLMFaults:
    """A queue of failures served to the next requests, in order; then normal answers.

    "429" (Retry-After: 1), "500", "timeout" (answers after 3 s), "malformed" (not JSON),
    "partial" (pairs without answers), "ungrounded" (answers not in the source), "401".
    ``outage`` makes every request a 503 until it is switched off; ``refuse_json_schema`` answers a request for
    ``response_format: json_schema`` with a 400, as servers without structured output do.
    ``first_ask`` is served to the first request of every distinct prompt (the queue above is in
    arrival order, which concurrent callers do not fix; this is not).
    """

    def __init__(self, faults: list[str] | None = None, refuse_json_schema: bool = False,
                 first_ask: str | None = None) -> None:
        self.queue = list(faults or [])
        self.outage = False
        self.refuse_json_schema = refuse_json_schema
        self.first_ask = first_ask
        self._seen: set[str] = set()

    def next(self, prompt: str) -> str | None:
        if self.outage:
            return "503"
        if self.first_ask is not None and prompt not in self._seen:
            self._seen.add(prompt)
            return self.first_ask
        return self.queue.pop(0) if self.queue else None


def fake_llm(kind: str, api_key: str | None = None, faults: LLMFaults | None = None,
             latency_s: float = 0.0, token_delay_s: float = 0.0, capacity: int | None = None) -> LoopbackServer:
    """A loopback LLM speaking Gemini's generateContent or OpenAI's chat completions protocol (whole, or streamed
    as server-sent events when asked: a word every ``token_delay_s``).

    Normal answers come from the project's deterministic extractive generator, so they are
    valid and grounded; every request's prompt is recorded (``server.prompts``) so tests can
    count calls per group. ``capacity``: requests served at once, as a saturated engine does; the rest
    wait for a turn before their first byte (``server.most_at_once`` records the most that came at once).
    """
    import json as _json

    from tasks.llm import offline as offline_llm

    faults = faults or LLMFaults()
    app = web.Application()
    server = LoopbackServer(app)
    server.prompts = []  # type: ignore[attr-defined]
    server.bodies = []  # type: ignore[attr-defined]
    server.most_at_once = 0  # type: ignore[attr-defined]
    turns = asyncio.Semaphore(capacity) if capacity else None
    arrived = 0

    def error(status: int, message: str, headers: dict | None = None) -> web.Response:
        if kind == "gemini":
            body = {"error": {"code": status, "message": message, "status": "UNAVAILABLE"}}
        else:
            body = {"error": {"message": message, "type": "server_error", "code": status}}
        return web.json_response(body, status=status, headers=headers)

    async def answer(prompt: str, authorised: bool) -> tuple[str | None, web.Response | None]:
        if latency_s:
            await asyncio.sleep(latency_s)
        if not authorised:
            return None, error(401, "API key not valid. Please pass a valid API key.")
        fault = faults.next(prompt)
        if fault in ("429", "500", "503", "401"):
            return None, error(int(fault), f"injected {fault}", {"Retry-After": "1"} if fault == "429" else None)
        if fault == "timeout":
            await asyncio.sleep(3)
        if fault == "malformed":
            return "Sure! Here are some questions: {pairs: [", None
        if fault == "partial":
            return _json.dumps({"pairs": [{"question": "What is it?"}, {"question": "Why?", "type": "why"}]}), None
        if fault == "ungrounded":
            return _json.dumps({"pairs": [{"question": "What is the capital of Mars?",
                                           "answer": "Olympus City on the red volcanic plains.", "type": "what"}]}), None
        return offline_llm.respond(prompt), None

    async def gemini(request: web.Request) -> web.Response:
        body = await request.json()
        server.bodies.append(body)
        prompt = "".join(part.get("text", "") for content in body["contents"] for part in content["parts"])
        server.prompts.append(prompt)
        text, failure = await answer(prompt, api_key is None or request.headers.get("x-goog-api-key") == api_key)
        if failure is not None:
            return failure
        return web.json_response({
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": len(prompt.split()), "candidatesTokenCount": len(text.split()),
                              "totalTokenCount": len(prompt.split()) + len(text.split())},
            "modelVersion": request.match_info["model"],
        })

    async def openai(request: web.Request) -> web.StreamResponse:
        nonlocal arrived
        arrived += 1
        server.most_at_once = max(server.most_at_once, arrived)
        try:
            if turns is None:
                return await openai_answer(request)
            async with turns:
                return await openai_answer(request)
        finally:
            arrived -= 1

    async def openai_answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        server.bodies.append(body)
        prompt = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        server.prompts.append(prompt)
        if faults.refuse_json_schema and body.get("response_format", {}).get("type") == "json_schema":
            return error(400, "'response_format.type' must be 'json_object' or 'text'")
        authorised = api_key is None or request.headers.get("Authorization") == f"Bearer {api_key}"
        text, failure = await answer(prompt, authorised)
        if failure is not None:
            return failure
        if body.get("stream"):
            return await openai_stream(request, body, prompt, text)
        return web.json_response({
            "id": f"chatcmpl-{len(server.prompts)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())},
        })

    async def openai_stream(request: web.Request, body: dict, prompt: str, text: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": f"chatcmpl-{len(server.prompts)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"]}
        words = text.split(" ")
        for n, word in enumerate(words):
            if token_delay_s:
                await asyncio.sleep(token_delay_s)
            piece = {**base, "choices": [{"index": 0, "delta": {"content": (" " if n else "") + word}}]}
            await response.write(f"data: {_json.dumps(piece)}\n\n".encode())
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(f"data: {_json.dumps(last)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {**base, "choices": [], "usage": {"prompt_tokens": len(prompt.split()),
                                                      "completion_tokens": len(words),
                                                      "total_tokens": len(prompt.split()) + len(words)}}
            await response.write(f"data: {_json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app.router.add_post(r"/{version:v1(?:beta)?}/models/{model:[^/:]+}:generateContent", gemini)
    app.router.add_post("/v1/chat/completions", openai)
    return server
