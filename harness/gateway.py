"""The gateway as a real process or in this one, and a load generator that keeps asking it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import httpx

from harness.loopback import ProcessExited, free_port, wait_healthy
from harness.project import REPO

ADMIN_TOKEN = "adm1n-t0ken"  # the admin token tests and benchmarks give gateways and stage 6


class GatewayProcess:
    """``python -m serving`` as a real process on a free loopback port; waits for /health, stops on exit."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...] = (), cwd: str | None = None,
                 ready_timeout_s: float = 120) -> None:
        self.port = free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.args, self.cwd, self.ready_timeout_s = args, cwd, ready_timeout_s
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GatewayProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            cwd=self.cwd or REPO, env={**self.env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_healthy(f"{self.url}/health", self.process, self.ready_timeout_s, 0.2)
        except ProcessExited:
            raise RuntimeError(f"gateway exited with {self.process.returncode}: {self.process.stdout.read()}") from None
        except TimeoutError:
            self.__exit__()
            raise RuntimeError(f"gateway did not come up in {self.ready_timeout_s} s") from None
        return self

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"gateway not ready after {timeout_s} s: {httpx.get(f'{self.url}/ready').json()}")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except Exception:
                self.process.kill()
                self.process.wait(timeout=5)


@contextmanager
def gateway_in_process(env: dict[str, str], ready: bool = True) -> Iterator:
    """The gateway's app in this process behind FastAPI's TestClient (its lifespan, warm-up included, runs), set up
    from GATEWAY_* variables as ``python -m serving`` without a config is: for tests of routes, where a process per
    test adds only its start-up. With ``ready``, returns once /ready answers 200."""
    from fastapi.testclient import TestClient

    from core.gateway import GatewaySettings
    from serving.__main__ import make_backend
    from serving.app import create_app

    with mock.patch.dict(os.environ, env):
        settings = GatewaySettings()
    with TestClient(create_app(settings, make_backend(settings))) as client:
        deadline = time.monotonic() + 120
        while ready and (answer := client.get("/ready")).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not ready after 120 s: {answer.json()}")
            time.sleep(0.05)
        yield client


class LoadGenerator:
    """Keeps ``concurrency`` clients asking the gateway until stopped; counts statuses and answering adapters,
    and keeps each request's latency (s)."""

    def __init__(self, url: str, concurrency: int = 16) -> None:
        self.url, self.concurrency = url, concurrency
        self.statuses: Counter = Counter()
        self.adapters: Counter = Counter()
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, client: httpx.AsyncClient, n: int) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                reply = await client.post(f"{self.url}/ask", json={"question": f"Question {n}?"})
                self.latencies.append(time.perf_counter() - started)
                self.statuses[reply.status_code] += 1
                if reply.status_code == 200:
                    self.adapters[reply.json()["adapter"]] += 1
            except httpx.HTTPError as error:
                self.statuses[type(error).__name__] += 1

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(*(self._client(client, n) for n in range(self.concurrency)))

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
