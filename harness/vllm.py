"""vLLM's OpenAI-compatible server with LoRA adapter loading and fault injection (the gateway's backend)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import web

from harness.loopback import LoopbackServer


@dataclass
class VLLMFaults:
    latency_s: float = 0.0
    refuse_load: set[str] = field(default_factory=set)   # adapter names whose load fails like a bad adapter
    healthy: bool = True                                   # False: /health 503 and chat 503 (engine dead)
    empty_answers: set[str] = field(default_factory=set)  # adapters that answer "" (a broken adapter)
    token_delay_s: float = 0.0                             # streamed: between two words
    fail_after_words: int | None = None                    # streamed: an error event after that many words


def fake_vllm(base_model: str, faults: VLLMFaults | None = None, port: int = 0) -> LoopbackServer:
    """vLLM's OpenAI-compatible server with runtime LoRA updating, answering deterministically.

    /health, /metrics, /v1/models (base + loaded adapters), /v1/chat/completions (404 for a model
    not loaded), /v1/load_lora_adapter and /v1/unload_lora_adapter with vLLM's error shapes.
    The answer names the model that produced it, so a test can tell base and adapters apart.
    """
    faults = faults or VLLMFaults()
    app = web.Application()
    adapters: dict[str, str] = {}
    requests: list[dict] = []
    aborted: list[str] = []

    def error(message: str, status: int, kind: str = "BadRequestError") -> web.Response:
        """vLLM 0.32's error body (its OpenAI-compatible server, as measured)."""
        return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": status}},
                                 status=status)

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200 if faults.healthy else 503)

    async def models(request: web.Request) -> web.Response:
        data = [{"id": base_model, "object": "model", "owned_by": "vllm", "root": base_model, "parent": None}]
        data += [{"id": name, "object": "model", "owned_by": "vllm", "root": path, "parent": base_model}
                 for name, path in adapters.items()]
        return web.json_response({"object": "list", "data": data})

    async def chat(request: web.Request) -> web.Response:
        if not faults.healthy:
            return error("engine is dead", 503, "ServiceUnavailableError")
        body = await request.json()
        model = body["model"]
        if model != base_model and model not in adapters:
            return error(f"The model `{model}` does not exist.", 404, "NotFoundError")
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        requests.append({"model": model, "system": system, "question": user,
                                "max_tokens": body.get("max_tokens"), "temperature": body.get("temperature")})
        answer = "" if model in faults.empty_answers else f"[{model}] {user}"
        if body.get("stream"):
            return await stream(request, body, model, answer, len((system + user).split()))
        return web.json_response({
            "id": f"chatcmpl-{len(requests)}", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len((system + user).split()), "completion_tokens": len(answer.split()),
                      "total_tokens": len((system + user + answer).split())}})

    async def stream(request: web.Request, body: dict, model: str, answer: str, prompt_tokens: int):
        """vLLM's server-sent events, a word a chunk; a reader that leaves is counted in ``aborted``."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        base = {"id": f"chatcmpl-{len(requests)}", "object": "chat.completion.chunk", "model": model}

        async def send(payload: dict | str) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {text}\n\n".encode())

        words = answer.split(" ") if answer else []
        try:
            await response.prepare(request)
            await send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
            for n, word in enumerate(words):
                if faults.fail_after_words is not None and n == faults.fail_after_words:
                    await send({"error": {"message": "engine died mid-answer", "type": "InternalServerError",
                                          "param": None, "code": 500}})
                    return response
                if faults.token_delay_s:
                    await asyncio.sleep(faults.token_delay_s)
                await send({**base, "choices": [{"index": 0, "delta": {"content": (" " if n else "") + word}}]})
            await send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                await send({**base, "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                             "completion_tokens": len(words)}})
            await send("[DONE]")
        except (ConnectionResetError, asyncio.CancelledError):
            aborted.append(model)
            raise
        return response

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="# TYPE vllm:num_requests_running gauge\n"
                                 f'vllm:num_requests_running{{model_name="{base_model}"}} 0\n'
                                 "# TYPE vllm:request_success_total counter\n"
                                 f'vllm:request_success_total{{model_name="{base_model}"}} {len(requests)}\n',
                            content_type="text/plain")

    async def load(request: web.Request) -> web.Response:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if name in adapters:
            return error(f"The lora adapter '{name}' has already been loaded.", 400)
        if name in faults.refuse_load:
            return error(f"Loading lora {name} failed: No adapter found for {path}", 404, "NotFoundError")
        adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload(request: web.Request) -> web.Response:
        name = (await request.json()).get("lora_name")
        if adapters.pop(name, None) is None:
            return error(f"The lora adapter '{name}' cannot be found.", 404, "NotFoundError")
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/load_lora_adapter", load)
    app.router.add_post("/v1/unload_lora_adapter", unload)
    server = LoopbackServer(app, port)
    server.adapters, server.requests, server.faults, server.aborted = adapters, requests, faults, aborted
    return server
