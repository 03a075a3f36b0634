"""A real Prefect API server on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from harness.loopback import free_port

# a worker started by a test asks for scheduled runs every second (Prefect's default: every 10 s): the test then waits
# for the run it made, not for the worker's next poll
POLLING_WORKER = {"PREFECT_WORKER_QUERY_SECONDS": "1"}


class PrefectServer:
    """A real Prefect API server (SQLite under ``home``) on a free loopback port; stopped with its children on exit."""

    def __init__(self, home) -> None:
        self.port = free_port()
        self.env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{self.port}/api",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                    "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(self.port)}
        self.process = None

    @property
    def api_url(self) -> str:
        return self.env["PREFECT_API_URL"]

    def __enter__(self) -> PrefectServer:
        self.process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                         "--port", str(self.port)], env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)
        self.__exit__()
        raise RuntimeError("the Prefect server did not start in 120 s")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
