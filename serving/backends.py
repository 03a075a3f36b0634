"""Where answers come from: vLLM over its OpenAI-compatible API, or the model in this process.

Both take the same (system, question) and leave prompt building to the model's own chat
template, exactly as evaluation (4d) did, so a served adapter answers as it was measured.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp


class BackendUnavailable(Exception):
    """The backend cannot be reached or is not ready (503)."""


class BackendTimeout(Exception):
    """The backend did not answer within the request timeout (504)."""


class UnknownModel(Exception):
    """The requested adapter is not loaded (404)."""


class AdapterLoadFailed(Exception):
    """The backend refused to load an adapter (rollout reports it and keeps the previous one)."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    backend_s: float


class Backend(Protocol):
    kind: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ready(self) -> bool: ...
    async def models(self) -> list[str]: ...
    async def chat(self, model: str, system: str, question: str, max_tokens: int, temperature: float) -> Completion: ...
    async def load_adapter(self, name: str, path: str) -> None: ...
    async def unload_adapter(self, name: str) -> None: ...


class VLLMBackend:
    """vLLM's OpenAI-compatible server: /v1/chat/completions, /v1/models, /health and the runtime LoRA endpoints.

    aiohttp, one session for answers with a pool of ``connections`` (httpx's pool polls every pooled
    connection on each request: at 64 connections it took most of the gateway's CPU, encode/httpx
    #3215), and a small one of its own for /health and the adapter endpoints, so /ready never waits
    behind answers in a full pool. Idle connections are dropped before vLLM's 5 s keep-alive ends
    them, so a request is never sent on a connection the server is closing.
    """

    kind = "vllm"
    KEEPALIVE_S = 4.0
    CONTROL_TIMEOUT_S = 5.0

    def __init__(self, url: str, timeout_s: float, connections: int = 256) -> None:
        self.url, self.timeout_s, self.connections = url.rstrip("/"), timeout_s, connections
        self._answers: aiohttp.ClientSession | None = None
        self._control: aiohttp.ClientSession | None = None

    def _session(self, control: bool) -> aiohttp.ClientSession:
        """Made on first use, inside the serving event loop (a session belongs to one loop)."""
        if self._answers is None:
            connect = min(5.0, self.timeout_s)
            self._answers = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, limit_per_host=0,
                                               keepalive_timeout=self.KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, connect=connect), raise_for_status=False)
            self._control = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=4, keepalive_timeout=self.KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(total=self.CONTROL_TIMEOUT_S, connect=connect))
        return self._control if control else self._answers

    async def start(self) -> None:
        """Nothing to load here: vLLM loads the model; /ready reports when it is up."""

    async def close(self) -> None:
        for session in (self._answers, self._control):
            if session is not None:
                await session.close()

    async def _request(self, method: str, path: str, body: dict | None = None, control: bool = True,
                       timeout_s: float | None = None) -> tuple[int, bytes]:
        session = self._session(control)
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        try:
            async with session.request(method, self.url + path, json=body,
                                       **({"timeout": timeout} if timeout else {})) as response:
                return response.status, await response.read()
        except TimeoutError as error:  # aiohttp's timeouts are TimeoutErrors too
            raise BackendTimeout(f"vLLM did not answer {path} within {timeout_s or self.timeout_s:g} s") from error
        except aiohttp.ClientError as error:
            raise BackendUnavailable(f"vLLM is unreachable ({type(error).__name__})") from error

    async def ready(self) -> bool:
        try:
            return (await self._request("GET", "/health"))[0] == 200
        except (BackendUnavailable, BackendTimeout):
            return False

    async def models(self) -> list[str]:
        status, body = await self._request("GET", "/v1/models")
        if status != 200:
            raise BackendUnavailable(f"vLLM /v1/models answered {status}")
        return [m["id"] for m in json.loads(body)["data"]]

    async def chat(self, model: str, system: str, question: str, max_tokens: int, temperature: float) -> Completion:
        started = time.perf_counter()
        status, raw = await self._request("POST", "/v1/chat/completions", {
            "model": model, "max_tokens": max_tokens, "temperature": temperature,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}, control=False)
        if status == 404:
            raise UnknownModel(f"model '{model}' is not loaded in vLLM")
        if status != 200:
            raise BackendUnavailable(f"vLLM answered {status}: {raw[:200].decode(errors='replace')}")
        body = json.loads(raw)
        usage = body.get("usage") or {}
        return Completion(body["choices"][0]["message"]["content"].strip(), usage.get("prompt_tokens", 0),
                          usage.get("completion_tokens", 0), time.perf_counter() - started)

    async def _lora(self, action: str, body: dict) -> None:
        status, raw = await self._request("POST", f"/v1/{action}_lora_adapter", body, timeout_s=self.timeout_s)
        if status != 200:
            raise AdapterLoadFailed(f"vLLM refused to {action} '{body['lora_name']}': {status} {_vllm_error(raw)}")

    async def load_adapter(self, name: str, path: str) -> None:
        await self._lora("load", {"lora_name": name, "lora_path": path})

    async def unload_adapter(self, name: str) -> None:
        await self._lora("unload", {"lora_name": name})


def _vllm_error(raw: bytes) -> str:
    """vLLM's own message, and the fix where it is one of ours to name."""
    try:
        body = json.loads(raw)
        message = str(body["error"]["message"] if "error" in body else body.get("message") or body.get("detail"))
    except (ValueError, TypeError, KeyError, AttributeError):
        message = raw[:300].decode(errors="replace")
    if message == "Not Found":  # the route itself is missing
        return ("vLLM has no runtime LoRA endpoints: start it with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (scripts/run_pipeline.sh --serve-local does)")
    if "No adapter found" in message:
        return (f"{message} (vLLM reads adapters from its own file system: set serving.backend_registry_dir to where "
                "it sees the registry)")
    return message[:300]


def _peft_name(name: str) -> str:
    """PEFT adapter names become module names, which cannot hold dots (v1.2)."""
    return name.replace(".", "_")


@dataclass
class _Pending:
    model: str
    question: str
    max_tokens: int
    temperature: float
    deadline: float  # time.monotonic() when its caller is answered 504
    future: asyncio.Future = field(repr=False)


class LocalBackend:
    """transformers + PEFT in this process, for CPU serving without vLLM.

    The model is loaded once; concurrent requests for the same adapter and settings are
    batched (up to ``max_batch_size``, waiting at most ``batch_wait_ms`` for company) and run
    in a worker thread so the event loop keeps serving /health, /ready and /metrics meanwhile.
    A batch stops generating when the last of its callers is answered 504 (its deadline, not
    a full timeout after the batch started, which a request queued behind another batch would
    outlive), and requests whose callers are gone are dropped before they are generated, so a
    burst of long requests cannot hold the model for longer than one timeout.
    """

    kind = "local"

    def __init__(self, base_model: str, system: str, timeout_s: float, max_batch_size: int = 8,
                 batch_wait_ms: float = 5.0, base_model_path: str | None = None) -> None:
        self.base_model, self.base_model_path = base_model, base_model_path or base_model
        self.system, self.timeout_s = system, timeout_s
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_ms / 1000
        self.model = self.tokenizer = None
        self.adapters: set[str] = set()
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._model_lock = asyncio.Lock()

    async def start(self) -> None:
        from core.inference import load_model

        try:
            self.model, self.tokenizer = await asyncio.to_thread(load_model, self.base_model_path)
        except Exception as error:  # its text names the folder: clients see /ready, which names no host path
            raise BackendUnavailable(f"the base model '{self.base_model}' could not be loaded "
                                     f"({type(error).__name__}; the gateway's api.log has the details)") from error
        self._worker = asyncio.create_task(self._serve_batches())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    async def ready(self) -> bool:
        return self.model is not None and self._worker is not None and not self._worker.done()

    async def models(self) -> list[str]:
        return [self.base_model, *sorted(self.adapters)]

    async def chat(self, model: str, system: str, question: str, max_tokens: int, temperature: float) -> Completion:
        if not await self.ready():
            raise BackendUnavailable("the local model is not loaded yet")
        if model != self.base_model and model not in self.adapters:
            raise UnknownModel(f"adapter '{model}' is not loaded")
        if system != self.system:
            raise ValueError("the local backend serves one system prompt")
        started = time.perf_counter()
        pending = _Pending(model, question, max_tokens, temperature, time.monotonic() + self.timeout_s,
                           asyncio.get_running_loop().create_future())
        await self._queue.put(pending)
        try:
            text, n_in, n_out = await asyncio.wait_for(pending.future, self.timeout_s)
        except TimeoutError:
            raise BackendTimeout(f"the local model did not answer within {self.timeout_s:g} s") from None
        return Completion(text, n_in, n_out, time.perf_counter() - started)

    async def _serve_batches(self) -> None:
        while True:
            first = await self._queue.get()
            batch, deadline = [first], time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            groups: dict[tuple, list[_Pending]] = {}
            for item in batch:
                if not item.future.done():  # its caller timed out or went away while it waited
                    groups.setdefault((item.model, item.max_tokens, item.temperature), []).append(item)
            for (model, max_tokens, temperature), items in groups.items():
                try:
                    async with self._model_lock:
                        left_s = max(i.deadline for i in items) - time.monotonic()
                        if left_s <= 0:  # every caller was answered 504 while the model was busy
                            continue
                        results = await asyncio.to_thread(self._generate, model, [i.question for i in items],
                                                          max_tokens, temperature, left_s)
                except Exception as error:
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(BackendUnavailable(f"local generation failed: {error}"))
                    continue
                for item, result in zip(items, results, strict=True):
                    if not item.future.done():
                        item.future.set_result((result.text, result.prompt_tokens, result.completion_tokens))

    def _generate(self, model: str, questions: list[str], max_tokens: int, temperature: float, max_time_s: float):
        from contextlib import nullcontext

        from core.inference import generate_batch

        if model == self.base_model:
            context = self.model.disable_adapter() if self.adapters else nullcontext()
        else:
            self.model.set_adapter(_peft_name(model))
            context = nullcontext()
        with context:
            return generate_batch(self.model, self.tokenizer, questions, self.system, max_tokens, temperature,
                                  max_time_s=max_time_s)

    async def load_adapter(self, name: str, path: str) -> None:
        if not (Path(path) / "adapter_config.json").is_file():
            raise AdapterLoadFailed(f"no adapter for '{name}' there (adapter_config.json is missing)")
        async with self._model_lock:
            try:
                await asyncio.to_thread(self._load, name, path)
            except Exception as error:
                raise AdapterLoadFailed(f"could not load '{name}': {type(error).__name__}") from error
        self.adapters.add(name)

    def _load(self, name: str, path: str) -> None:
        from peft import PeftModel

        if not self.adapters and not isinstance(self.model, PeftModel):
            self.model = PeftModel.from_pretrained(self.model, path, adapter_name=_peft_name(name))
        else:
            self.model.load_adapter(path, adapter_name=_peft_name(name))
        self.model.eval()

    async def unload_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise UnknownModel(f"adapter '{name}' is not loaded")
        async with self._model_lock:
            await asyncio.to_thread(self.model.delete_adapter, _peft_name(name))
        self.adapters.discard(name)
