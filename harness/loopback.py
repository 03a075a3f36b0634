"""A real HTTP server on loopback: an aiohttp app on its own event loop in a background thread.

On a free port of 127.0.0.1, recording every request it receives so tests can count attempts.
Every fake service of this package (web host, SerpAPI, Gemini/OpenAI, the Hub, vLLM) is one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Hit:
    path: str
    at: float
    query: dict[str, str] = field(default_factory=dict)


class ProcessExited(RuntimeError):
    """The process being waited for ended first."""


def wait_healthy(url: str, process, timeout_s: float, interval_s: float) -> None:
    """Until GET ``url`` answers 200: ProcessExited if ``process`` (a Popen) ends first, TimeoutError after ``timeout_s``."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProcessExited(f"exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval_s)
    raise TimeoutError(f"{url} did not answer 200 in {timeout_s} s")


def free_port(preferred: int = 0) -> int:
    """A port of 127.0.0.1 that nothing listens on right now (for servers run as separate processes):
    ``preferred`` when it is free, else any."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LoopbackServer:
    """Start an aiohttp app on 127.0.0.1:<free port> in a thread; stop it on exit."""

    def __init__(self, app: web.Application, port: int = 0) -> None:
        self.app = app
        self.hits: list[Hit] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = port

        @web.middleware
        async def record(request: web.Request, handler: Callable) -> web.StreamResponse:
            self.hits.append(Hit(request.path, time.monotonic(), dict(request.query)))
            return await handler(request)

        app.middlewares.append(record)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, path: str) -> int:
        return sum(1 for hit in self.hits if hit.path == path)

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop serving (idempotent: a test may stop a server early to simulate a crash)."""
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
