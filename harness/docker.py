"""The project's private Docker engine, and the build args that give the training image a CPU torch."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from harness.loopback import free_port
from harness.project import REPO


class DockerEngine:
    """The project's private Docker engine (scripts/docker_engine.sh) with the local base image made.

    Started (and the engine installed) when it is not running; stopped on exit only if this started it,
    so a developer's running engine is left alone. ``host`` is its DOCKER_HOST.
    """

    BASE_IMAGE = "local/python:3.11-bookworm"

    def __init__(self) -> None:
        self.script = REPO / "scripts" / "docker_engine.sh"
        self.started_here = not (Path(os.environ.get("DOCKER_ENGINE_RUN", "/tmp/domain-llm-docker")) / "dockerd.pid").is_file()
        self.host = ""

    def _run(self, command: str) -> str:
        result = subprocess.run(["bash", str(self.script), command], capture_output=True, text=True, timeout=900,
                                env={**os.environ, **({"DOCKER_HOST": self.host} if self.host else {})})
        if result.returncode != 0:
            raise RuntimeError(f"docker_engine.sh {command}: {result.stderr[-3000:]}")
        return result.stdout

    def __enter__(self) -> DockerEngine:
        self.host = self._run("start").strip().split("DOCKER_HOST=", 1)[1]
        try:
            self._run("base")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.started_here:
            self._run("stop")


def build_image(client, dockerfile: str, tag: str, **buildargs: str):
    """Build ``dockerfile`` of the repository on the local base image (host network: the registries it needs)."""
    image, _ = client.images.build(path=str(REPO), dockerfile=dockerfile, tag=tag, rm=True, network_mode="host",
                                   buildargs={"BASE_IMAGE": DockerEngine.BASE_IMAGE, **buildargs})
    return image


WHEELS_PORT = 47113


@contextlib.contextmanager
def cpu_torch_buildargs():
    """Build args that give Dockerfile.gpu the CPU torch build: this machine's wheel (not on any index)
    served on loopback as find-links when it is there, else PyTorch's CPU index.

    The wheels' URL is a build arg, part of the image's cache key: on a fixed port, the dependency layer (torch,
    docling, ... ~10 minutes to install here) is built once and reused while pyproject.toml is unchanged.
    """
    wheels = Path("/opt/wheels")
    if not any(wheels.glob("torch-*+cpu-*.whl")):
        yield {"PIP_EXTRA_INDEX_URL": "https://download.pytorch.org/whl/cpu"}
        return
    port = free_port(WHEELS_PORT)  # taken: another port, and a build without the cached layer
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(wheels)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield {"PIP_FIND_LINKS": f"http://127.0.0.1:{port}/"}
    finally:
        server.terminate()
        server.wait(timeout=10)
