"""The pinned llama.cpp: where it is (its converters for stage 5's GGUF exports, `llama-server` for serving.backend:
llamacpp) and how llama-server is started, one command line for the gateway's backend and stage 5's parity checks,
so both measure and serve the same way. scripts/llamacpp.sh fetches and builds it on first use.

Each llama-server runs one model: a base GGUF, with at most one LoRA applied to every request. Switching adapters per
request in one server would reuse prompt caches across adapters (llama.cpp #26207), and llama-server cannot load an
adapter once started: a version is a server of its own, the base weights shared through the page cache (mmap).
"""

from __future__ import annotations

import os
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

from core.config import PipelineConfig

REPO = Path(__file__).resolve().parent.parent


class LlamaCppMissing(RuntimeError):
    """llama.cpp could not be fetched or built; scripts/llamacpp.sh said why (on stderr)."""


@lru_cache(maxsize=1)
def llamacpp_dir() -> Path:
    """The built llama.cpp (``src/`` with the converters and gguf-py, ``bin/llama-server``); fetched and built on first
    use (the script says so: ~15 min on 2 cores) and cached (LLAMACPP_DIR, default .llamacpp)."""
    result = subprocess.run(["bash", str(REPO / "scripts/llamacpp.sh")], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise LlamaCppMissing("llama.cpp is not available: scripts/llamacpp.sh failed (its reason is above)")
    return Path(result.stdout.strip().splitlines()[-1])


def llama_server() -> Path:
    return llamacpp_dir() / "bin" / "llama-server"


def base_gguf_path(config: PipelineConfig, outtype: str) -> Path:
    """Where the base model converted to GGUF at ``outtype`` is kept (once per base model and type)."""
    return config.path(config.paths.gguf) / f"base-{outtype}.gguf"


def threads() -> int:
    """llama.cpp's threads: OMP_NUM_THREADS when set (a share of the CPUs), else every CPU."""
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_threads(slots: int) -> int:
    """llama-server's HTTP threads, and so the most connections a client may keep to it: cpp-httplib serves a
    connection on one thread for as long as it is kept alive, and a connection beyond the threads waits until one idles
    out (5 s; cpp-httplib #1891; measured here: 4 of 16 answers 4 s late). Twice the slots for answers, so that
    requests queued behind busy slots are already at the server when one frees, and 4 for health checks."""
    return 2 * slots + 4


def server_command(binary: Path, base: Path, lora: Path | None, port: int, slots: int, context: int) -> list[str]:
    """llama-server on loopback for ``base`` (with ``lora`` applied to every request): the model's own chat template
    (--jinja, as transformers renders it for 4d), ``slots`` requests generated at once with ``context`` tokens each."""
    return [str(binary), "--model", str(base), *(["--lora", str(lora)] if lora else []),
            "--host", "127.0.0.1", "--port", str(port), "--jinja", "--parallel", str(slots),
            "--ctx-size", str(context * slots), "--threads", str(threads()),
            "--threads-http", str(http_threads(slots)), "--no-webui"]
