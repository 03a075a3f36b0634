"""llama.cpp as the gateway's engine: llama-server processes this backend starts and stops, one per model.

llama-server cannot load an adapter once it runs, and one server switching adapters per request reuses its prompt
cache across them (llama.cpp #26207: answers silently contaminated by the previous adapter). So each model has a
server of its own: the base GGUF alone, and the base GGUF with one version's GGUF LoRA (stage 5's export, in the
version's registry folder) for each loaded version. The base weights are mapped from the same file by every server,
so the operating system holds them once; loading a version starts its server beside the running ones, unloading it
stops that server once its answers are done. Answers and streams go through the same OpenAI-protocol client as vLLM's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
from dataclasses import dataclass
from pathlib import Path

from core.llamacpp import free_port, http_threads, server_command
from core.prompts import Messages
from serving.backends import (
    AdapterLoadFailed,
    BackendUnavailable,
    Completion,
    OpenAIServer,
    Sampling,
    UnknownModel,
)

ENGINE = "llama.cpp"


_PRCTL = ctypes.CDLL(None).prctl  # resolved here: the child runs no import (its parent has threads)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the gateway dies, however it dies (Linux), so no server outlives it."""
    _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class _Server:
    process: asyncio.subprocess.Process
    client: OpenAIServer
    log: Path


def answer_connections(slots: int, connections: int) -> int:
    """The gateway's pool of connections for answers to one llama-server: at most ``connections``, and with the
    control calls' within the server's HTTP threads (a connection beyond them waits for one to idle out)."""
    return min(connections, http_threads(slots) - OpenAIServer.CONTROL_CONNECTIONS)


class LlamaCppBackend:
    kind = "llamacpp"
    START_TIMEOUT_S = 300.0

    def __init__(self, binary: Path, base_gguf: str, base_model: str, timeout_s: float, slots: int, context: int,
                 logs_dir: Path, connections: int = 256) -> None:
        self.binary, self.base_gguf, self.base_model = binary, Path(base_gguf), base_model
        self.timeout_s, self.slots, self.context, self.connections = timeout_s, slots, context, connections
        self.logs_dir = logs_dir
        self.servers: dict[str, _Server] = {}
        self._loading = asyncio.Lock()

    async def _spawn(self, name: str, lora: Path | None) -> _Server:
        """A llama-server for ``name``, answering /health; its log (logs_dir/llama-server-<name>.log) says why not."""
        port = free_port()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.logs_dir / f"llama-server-{name}.log"
        with open(log, "w") as output:
            process = await asyncio.create_subprocess_exec(
                *server_command(self.binary, self.base_gguf, lora, port, self.slots, self.context),
                stdout=output, stderr=asyncio.subprocess.STDOUT, preexec_fn=_die_with_parent)
        client = OpenAIServer(f"http://127.0.0.1:{port}", self.timeout_s, answer_connections(self.slots, self.connections),
                              ENGINE)
        server = _Server(process, client, log)
        deadline = asyncio.get_running_loop().time() + self.START_TIMEOUT_S
        while not await server.client.ready():
            if process.returncode is not None or asyncio.get_running_loop().time() > deadline:
                await self._stop(server)
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise BackendUnavailable(f"llama-server for '{name}' did not start ({log.name}: {' | '.join(tail)})")
            await asyncio.sleep(0.25)
        return server

    @staticmethod
    async def _stop(server: _Server) -> None:
        await server.client.close()
        if server.process.returncode is None:
            server.process.terminate()
            try:
                await asyncio.wait_for(server.process.wait(), 30)
            except TimeoutError:
                server.process.kill()

    async def start(self) -> None:
        if not self.binary.is_file():
            raise BackendUnavailable(f"no llama-server at {self.binary} (scripts/llamacpp.sh builds it)")
        if not self.base_gguf.is_file():
            raise BackendUnavailable(f"no base model GGUF at {self.base_gguf} (scripts/run_pipeline.sh --serve-local "
                                     "converts it, as stage 5 does)")
        self.servers[self.base_model] = await self._spawn("base", None)

    async def close(self) -> None:
        for server in self.servers.values():
            await self._stop(server)
        self.servers.clear()

    async def ready(self) -> bool:
        base = self.servers.get(self.base_model)
        return base is not None and base.process.returncode is None and await base.client.ready()

    async def models(self) -> list[str]:
        return [self.base_model, *sorted(name for name in self.servers if name != self.base_model)]

    def _client(self, model: str) -> OpenAIServer:
        if (server := self.servers.get(model)) is None:
            raise UnknownModel(f"adapter '{model}' is not loaded")
        if server.process.returncode is not None:
            raise BackendUnavailable(f"llama-server for '{model}' has exited (its log: {server.log.name})")
        return server.client

    async def chat(self, model: str, messages: Messages, sampling: Sampling) -> Completion:
        return await self._client(model).chat(model, messages, sampling)

    async def stream(self, model: str, messages: Messages, sampling: Sampling):
        return await self._client(model).stream(model, messages, sampling)

    async def load_adapter(self, name: str, path: str) -> None:
        """``path``: a registered version's folder; its GGUF LoRA is ``gguf/adapter-<type>.gguf`` (stage 5)."""
        found = sorted((Path(path) / "gguf").glob("adapter-*.gguf"))
        if not found:
            raise AdapterLoadFailed(f"'{name}' has no GGUF LoRA (gguf/adapter-*.gguf): llama.cpp serves versions "
                                    "registered with registration.exports.gguf set")
        async with self._loading:
            if name in self.servers:
                return
            try:
                self.servers[name] = await self._spawn(name, found[0])
            except BackendUnavailable as error:
                raise AdapterLoadFailed(str(error)) from error

    async def unload_adapter(self, name: str) -> None:
        if name == self.base_model or name not in self.servers:
            raise UnknownModel(f"adapter '{name}' is not loaded")
        server = self.servers.pop(name)
        with contextlib.suppress(ProcessLookupError):
            await self._stop(server)
