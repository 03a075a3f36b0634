"""Where answers come from: an engine's OpenAI-compatible server (vLLM; llama.cpp's in serving/llamacpp.py), or the
model in this process.

Both take chat messages and leave prompt building to the model's own chat template, exactly as
evaluation (4d) did, so a served adapter answers as it was measured; both answer whole
(``chat``) or piece by piece as the engine writes (``stream``), and stop generating when a
stream's reader goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

from core.prompts import Messages


class BackendUnavailable(Exception):
    """The backend cannot be reached or is not ready (503)."""


class BackendTimeout(Exception):
    """The backend did not answer within the request timeout (504)."""


class UnknownModel(Exception):
    """The requested adapter is not loaded (404)."""


class BackendRefused(Exception):
    """The backend refused the request itself, e.g. a prompt longer than the model's context (400)."""


class AdapterLoadFailed(Exception):
    """The backend refused to load an adapter (rollout reports it and keeps the previous one)."""


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0  # 0: greedy, as evaluated
    top_p: float | None = None

    def openai(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature,
                **({"top_p": self.top_p} if self.top_p is not None else {})}


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    backend_s: float
    finish_reason: str = "stop"


class Stream(Protocol):
    """An answer's pieces as the engine writes them; ``close()`` (synchronous: it must work in a cancelled task)
    tells the engine to stop, ``stopped()`` returns once it has. Then the token counts say what it generated,
    and ``finish_reason`` how it ended."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str

    def __aiter__(self) -> AsyncIterator[str]: ...
    def close(self) -> None: ...
    async def stopped(self) -> None: ...


class Backend(Protocol):
    kind: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ready(self) -> bool: ...
    async def models(self) -> list[str]: ...
    async def chat(self, model: str, messages: Messages, sampling: Sampling) -> Completion: ...
    async def stream(self, model: str, messages: Messages, sampling: Sampling) -> Stream:
        """Opened: an unknown model or an unreachable backend is raised here, before any piece."""
    async def load_adapter(self, name: str, path: str) -> None: ...
    async def unload_adapter(self, name: str) -> None: ...


class OpenAIServer:
    """An engine's OpenAI-compatible server (vLLM's, llama.cpp's): /v1/chat/completions, /v1/models and /health.

    aiohttp, one session for answers with a pool of ``connections`` (httpx's pool polls every pooled
    connection on each request: at 64 connections it took most of the gateway's CPU, encode/httpx
    #3215), and a small one of its own for /health and the adapter endpoints, so /ready never waits
    behind answers in a full pool. Idle connections are dropped before vLLM's 5 s keep-alive ends
    them, so a request is never sent on a connection the server is closing.
    """

    KEEPALIVE_S = 4.0
    CONTROL_TIMEOUT_S = 5.0
    CONTROL_CONNECTIONS = 4

    def __init__(self, url: str, timeout_s: float, connections: int = 256, engine: str = "vLLM") -> None:
        self.url, self.timeout_s, self.connections, self.engine = url.rstrip("/"), timeout_s, connections, engine
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
                connector=aiohttp.TCPConnector(limit=self.CONTROL_CONNECTIONS, keepalive_timeout=self.KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(total=self.CONTROL_TIMEOUT_S, connect=connect))
        return self._control if control else self._answers

    async def start(self) -> None:
        """Nothing to load here: the engine loads the model; /ready reports when it is up."""

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
            raise BackendTimeout(f"{self.engine} did not answer {path} within {timeout_s or self.timeout_s:g} s") from error
        except aiohttp.ClientError as error:
            raise BackendUnavailable(f"{self.engine} is unreachable ({type(error).__name__})") from error

    async def ready(self) -> bool:
        try:
            return (await self._request("GET", "/health"))[0] == 200
        except (BackendUnavailable, BackendTimeout):
            return False

    async def models(self) -> list[str]:
        status, body = await self._request("GET", "/v1/models")
        if status != 200:
            raise BackendUnavailable(f"{self.engine} /v1/models answered {status}")
        return [m["id"] for m in json.loads(body)["data"]]

    async def chat(self, model: str, messages: Messages, sampling: Sampling) -> Completion:
        started = time.perf_counter()
        status, raw = await self._request("POST", "/v1/chat/completions",
                                          {"model": model, "messages": messages, **sampling.openai()}, control=False)
        _raise_for(status, raw, model, self.engine)
        body = json.loads(raw)
        usage = body.get("usage") or {}
        choice = body["choices"][0]
        return Completion(choice["message"]["content"].strip(), usage.get("prompt_tokens", 0),
                          usage.get("completion_tokens", 0), time.perf_counter() - started,
                          choice.get("finish_reason") or "stop")

    async def stream(self, model: str, messages: Messages, sampling: Sampling) -> _EventStream:
        """The engine's own stream; a timeout here is no token for ``timeout_s``, however long the whole answer takes."""
        body = {"model": model, "messages": messages, **sampling.openai(), "stream": True,
                "stream_options": {"include_usage": True}}
        timeout = aiohttp.ClientTimeout(total=None, connect=min(5.0, self.timeout_s), sock_read=self.timeout_s)
        try:
            response = await self._session(False).post(self.url + "/v1/chat/completions", json=body, timeout=timeout)
        except TimeoutError as error:
            raise BackendTimeout(f"{self.engine} did not start answering within {self.timeout_s:g} s") from error
        except aiohttp.ClientError as error:
            raise BackendUnavailable(f"{self.engine} is unreachable ({type(error).__name__})") from error
        if response.status != 200:
            raw = await response.read()
            response.release()
            _raise_for(response.status, raw, model, self.engine)
        return _EventStream(response, self.timeout_s, self.engine)



class VLLMBackend(OpenAIServer):
    """vLLM's server, with its runtime LoRA endpoints (VLLM_ALLOW_RUNTIME_LORA_UPDATING)."""

    kind = "vllm"

    async def _lora(self, action: str, body: dict) -> None:
        status, raw = await self._request("POST", f"/v1/{action}_lora_adapter", body, timeout_s=self.timeout_s)
        if status != 200:
            raise AdapterLoadFailed(f"vLLM refused to {action} '{body['lora_name']}': {status} {_vllm_error(raw)}")

    async def load_adapter(self, name: str, path: str) -> None:
        await self._lora("load", {"lora_name": name, "lora_path": path})

    async def unload_adapter(self, name: str) -> None:
        await self._lora("unload", {"lora_name": name})


class _EventStream:
    """The engine's server-sent events, read line by line. Closing the connection is how the engine learns the reader
    is gone: vLLM aborts the request, llama-server stops its slot."""

    def __init__(self, response: aiohttp.ClientResponse, timeout_s: float, engine: str) -> None:
        self.response, self.timeout_s, self.engine = response, timeout_s, engine
        self.prompt_tokens = self.completion_tokens = 0
        self.finish_reason = "stop"

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for line in self.response.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise BackendUnavailable(f"{self.engine} failed mid-answer: {_vllm_error(data)}")
                if usage := chunk.get("usage"):
                    self.prompt_tokens, self.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
                for choice in chunk.get("choices") or ():
                    if text := (choice.get("delta") or {}).get("content"):
                        yield text
                    self.finish_reason = choice.get("finish_reason") or self.finish_reason
        except TimeoutError as error:
            raise BackendTimeout(f"{self.engine} wrote no token for {self.timeout_s:g} s") from error
        except aiohttp.ClientError as error:
            raise BackendUnavailable(f"{self.engine}'s stream broke off ({type(error).__name__})") from error
        finally:
            self.response.release()

    def close(self) -> None:
        self.response.close()

    async def stopped(self) -> None:
        """The engine stops when the connection closes; its own metrics count what it generated."""


def _raise_for(status: int, raw: bytes, model: str, engine: str) -> None:
    """The engine's refusals as the gateway's errors: an unknown model (404), a request it cannot serve (400)."""
    if status == 200:
        return
    if status == 404:
        raise UnknownModel(f"model '{model}' is not loaded in {engine}")
    if status == 400:
        raise BackendRefused(f"{engine} refused the request: {_vllm_error(raw)}")
    raise BackendUnavailable(f"{engine} answered {status}: {raw[:200].decode(errors='replace')}")


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
    messages: Messages
    sampling: Sampling
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
    burst of long requests cannot hold the model for longer than one timeout. A stream is
    generated alone (one sequence: greedy, it answers as a batch of one does) and stops at the
    next token once its reader goes away.
    """

    kind = "local"

    def __init__(self, base_model: str, timeout_s: float, max_batch_size: int = 8,
                 batch_wait_ms: float = 5.0, base_model_path: str | None = None) -> None:
        self.base_model, self.base_model_path = base_model, base_model_path or base_model
        self.timeout_s = timeout_s
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

    async def _check(self, model: str) -> None:
        if not await self.ready():
            raise BackendUnavailable("the local model is not loaded yet")
        if model != self.base_model and model not in self.adapters:
            raise UnknownModel(f"adapter '{model}' is not loaded")

    async def chat(self, model: str, messages: Messages, sampling: Sampling) -> Completion:
        await self._check(model)
        started = time.perf_counter()
        pending = _Pending(model, messages, sampling, time.monotonic() + self.timeout_s,
                           asyncio.get_running_loop().create_future())
        await self._queue.put(pending)
        try:
            generation = await asyncio.wait_for(pending.future, self.timeout_s)
        except TimeoutError:
            raise BackendTimeout(f"the local model did not answer within {self.timeout_s:g} s") from None
        return Completion(generation.text, generation.prompt_tokens, generation.completion_tokens,
                          time.perf_counter() - started, _finish(generation.completion_tokens, sampling))

    async def stream(self, model: str, messages: Messages, sampling: Sampling) -> _LocalStream:
        await self._check(model)
        return _LocalStream(self, model, messages, sampling)

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
                    groups.setdefault((item.model, item.sampling), []).append(item)
            for (model, sampling), items in groups.items():
                try:
                    async with self._model_lock:
                        left_s = max(i.deadline for i in items) - time.monotonic()
                        if left_s <= 0:  # every caller was answered 504 while the model was busy
                            continue
                        results = await asyncio.to_thread(self._generate, model, [i.messages for i in items],
                                                          sampling, left_s)
                except Exception as error:
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(BackendUnavailable(f"local generation failed: {error}"))
                    continue
                for item, result in zip(items, results, strict=True):
                    if not item.future.done():
                        item.future.set_result(result)

    def _use(self, model: str):
        """The adapter ``model`` names made the active one; for the base model, a context with adapters disabled."""
        from contextlib import nullcontext

        if model == self.base_model:
            return self.model.disable_adapter() if self.adapters else nullcontext()
        self.model.set_adapter(_peft_name(model))
        return nullcontext()

    def _generate(self, model: str, conversations: list[Messages], sampling: Sampling, max_time_s: float):
        from core.inference import generate_batch

        with self._use(model):
            return generate_batch(self.model, self.tokenizer, conversations, sampling.max_tokens, sampling.temperature,
                                  max_time_s=max_time_s, top_p=sampling.top_p)

    def _generate_streamed(self, model: str, messages: Messages, sampling: Sampling, emit, cancelled: threading.Event):
        from core.inference import generate_streamed

        with self._use(model):
            return generate_streamed(self.model, self.tokenizer, messages, sampling.max_tokens, emit, cancelled,
                                     sampling.temperature, sampling.top_p, max_time_s=self.timeout_s)

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


def _finish(completion_tokens: int, sampling: Sampling) -> str:
    return "length" if completion_tokens >= sampling.max_tokens else "stop"


class _LocalStream:
    """Generation in a worker thread (under the model's lock, as batches are), its pieces handed to this loop."""

    def __init__(self, backend: LocalBackend, model: str, messages: Messages, sampling: Sampling) -> None:
        self.backend, self.model, self.messages, self.sampling = backend, model, messages, sampling
        self.cancelled = threading.Event()
        self.prompt_tokens = self.completion_tokens = 0
        self.finish_reason = "stop"
        self._task: asyncio.Task | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        loop, pieces, end = asyncio.get_running_loop(), asyncio.Queue(), object()

        def emit(text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        async def generate():
            async with self.backend._model_lock:
                if self.cancelled.is_set():  # its reader left while it waited for the model
                    return None
                return await asyncio.to_thread(self.backend._generate_streamed, self.model, self.messages,
                                               self.sampling, emit, self.cancelled)

        self._task = asyncio.create_task(generate())
        self._task.add_done_callback(lambda _: pieces.put_nowait(end))  # after every piece the thread handed over
        try:
            while (piece := await pieces.get()) is not end:
                yield piece
            self._count()
        finally:
            self.cancelled.set()

    def _count(self) -> None:
        try:
            generation = self._task.result()
        except Exception as error:
            raise BackendUnavailable(f"local generation failed: {error}") from error
        if generation is not None:
            self.prompt_tokens, self.completion_tokens = generation.prompt_tokens, generation.completion_tokens
            self.finish_reason = _finish(generation.completion_tokens, self.sampling)

    def close(self) -> None:
        self.cancelled.set()

    async def stopped(self) -> None:
        """Once the generation has stopped (at the next token after ``close``): the tokens it did generate."""
        if self._task is not None:
            await asyncio.wait([self._task])
            with contextlib.suppress(BackendUnavailable):  # already said to its reader, or no one is reading
                self._count()
