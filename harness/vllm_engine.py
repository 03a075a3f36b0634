"""The real vLLM engine (the CPU build) as a process, started the way --serve-local starts it, for tests and benchmarks.

The fake in harness/vllm.py stays for the faults a real engine cannot be made to show (timeouts, 5xx, refusals);
everything else is checked against this one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from core.config import load_config
from core.engine import engine_command, engine_environment
from harness.loopback import ProcessExited, wait_healthy
from harness.project import REPO

START_TIMEOUT_S = 600  # ~60-90 s on an idle 2-core machine; several times that beside a training run


def engine_python() -> str:
    """The engine environment's interpreter, installed on first use (scripts/vllm_engine.sh, ~3 min, cached)."""
    return subprocess.run(["bash", str(REPO / "scripts/vllm_engine.sh")], capture_output=True, text=True,
                          check=True).stdout.strip()


class VLLMEngine:
    """vLLM for ``config`` (its serving.vllm_url and vllm_port say where), from the config's folder; waits for
    /health, stops on exit (SIGTERM, then SIGKILL). Its log is ``log``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.url = load_config(config).serving.vllm_url.rstrip("/")
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> VLLMEngine:
        config = load_config(self.config)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(engine_command(config, engine_python()), cwd=self.config.parent,
                                            env={**os.environ, **engine_environment(config)}, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_healthy(f"{self.url}/health", self.process, START_TIMEOUT_S, 1)
        except ProcessExited:
            raise RuntimeError(f"vLLM exited with {self.process.returncode}: {self.tail()}") from None
        except TimeoutError:
            self.__exit__()
            raise RuntimeError(f"vLLM did not come up in {START_TIMEOUT_S} s: {self.tail()}") from None
        return self

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def models(self) -> list[str]:
        return [m["id"] for m in httpx.get(f"{self.url}/v1/models", timeout=10).json()["data"]]

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, 15)  # the API server and its engine core process
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=10)
