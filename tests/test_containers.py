"""Real containers on a real Docker engine: the project's own private dockerd (scripts/docker_engine.sh),
images built on the locally made base, every container on the host network so traffic stays on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.servers import fake_vllm, free_port

ENGINE = REPO / "scripts" / "docker_engine.sh"
BASE_IMAGE = "local/python:3.11-bookworm"
LABEL = "domain-llm.test"
MODEL = "meta-llama/Llama-3.2-3B-Instruct"
ADAPTER = "pregnancy-qa-lora-v1.0"


def engine(command: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(["bash", str(ENGINE), command], capture_output=True, text=True, timeout=900,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"docker_engine.sh {command}: {result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def docker_client():
    """The engine (installed and started when missing) and the base image; stopped again if this started it."""
    import docker

    pidfile = Path(os.environ.get("DOCKER_ENGINE_RUN", "/tmp/domain-llm-docker")) / "dockerd.pid"
    ours = not pidfile.is_file()
    host = engine("start").strip().split("DOCKER_HOST=", 1)[1]
    try:
        engine("base", {"DOCKER_HOST": host})
        client = docker.DockerClient(base_url=host, timeout=600)
        try:
            yield client
        finally:
            for container in client.containers.list(all=True, filters={"label": LABEL}):
                container.remove(force=True)
            client.close()
    finally:
        if ours:
            engine("stop")


def build(client, dockerfile: str, tag: str, **buildargs: str):
    image, _ = client.images.build(path=str(REPO), dockerfile=dockerfile, tag=tag, rm=True, network_mode="host",
                                   buildargs={"BASE_IMAGE": BASE_IMAGE, **buildargs})
    return image


def wait_ready(url: str, container, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"the container exited: {container.logs()[-3000:].decode()}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready after {timeout_s} s: {container.logs()[-3000:].decode()}")


def test_the_gateway_image_serves_every_route_as_a_healthy_non_root_container(docker_client):
    image = build(docker_client, "Dockerfile.api", "domain-llm-gateway:test")
    assert image.attrs["Config"]["User"] == "gateway"
    assert image.attrs["Size"] < 500 * 1024 * 1024  # no torch, no model code: the gateway only

    port = free_port()
    with fake_vllm(MODEL) as vllm:
        vllm.adapters[ADAPTER] = "/adapters/v1.0"
        container = docker_client.containers.run(
            image.id, detach=True, network_mode="host", labels={LABEL: "1"},
            environment={"PORT": str(port), "GATEWAY_VLLM_URL": vllm.url, "GATEWAY_BASE_MODEL": MODEL,
                         "GATEWAY_ADAPTER_NAME": ADAPTER, "GATEWAY_DOMAIN": "pregnancy", "API_TOKEN": "t0ken"})
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, container)
        live = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/live"], cwd=REPO,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "GATEWAY_URL": url, "API_TOKEN": "t0ken"})
        assert live.returncode == 0, live.stdout[-3000:]
        assert httpx.post(f"{url}/ask", json={"question": "Is it safe?"}, timeout=30).status_code == 401
        assert "gateway_requests_total" in httpx.get(f"{url}/metrics", timeout=10).text

        assert container.exec_run(["id", "-u"]).output.strip() == b"10001"
        deadline = time.monotonic() + 90
        while (health := container.attrs["State"].get("Health", {}).get("Status")) != "healthy":
            assert time.monotonic() < deadline and health != "unhealthy", container.attrs["State"]
            time.sleep(1)
            container.reload()
        requests_log = container.exec_run(["cat", "/app/logs/requests.log"]).output.decode()
        assert '"route": "/ask"' in requests_log and "t0ken" not in requests_log
        container.stop(timeout=10)
    assert container.wait(timeout=30)["StatusCode"] == 0  # SIGTERM: a clean shutdown, not a kill
