"""The gateway under load and under a fuzzer: nothing fails, /ready does not flap, limits hold, workers add up."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.gateway import GatewayProcess
from harness.project import REPO
from harness.vllm import VLLMFaults, fake_vllm
from serving.logs import configure_logging
from tests.test_gateway import ADAPTER, BASE, gateway_env, metric

pytestmark = pytest.mark.e2e

CLIENTS = 64


async def ask_while_polling_ready(url: str, requests: int, body: dict, timeout_s: float = 60) -> tuple[Counter, Counter]:
    """``CLIENTS`` clients ask until ``requests`` were sent, while another polls /ready; (ask statuses, ready statuses)."""
    asked, ready = Counter(), Counter()
    left = iter(range(requests))
    done = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in left:
            try:
                async with session.post(f"{url}/ask", json=body) as reply:
                    await reply.read()
                    asked[reply.status] += 1
            except (aiohttp.ClientError, TimeoutError) as error:
                asked[type(error).__name__] += 1

    async def poll(session: aiohttp.ClientSession) -> None:
        while not done.is_set():
            try:
                async with session.get(f"{url}/ready") as reply:
                    ready[reply.status] += 1
            except (aiohttp.ClientError, TimeoutError) as error:
                ready[type(error).__name__] += 1
            await asyncio.sleep(0.05)

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=CLIENTS)) as load, \
            aiohttp.ClientSession(timeout=timeout) as probe:
        poller = asyncio.create_task(poll(probe))
        await asyncio.gather(*(client(load) for _ in range(CLIENTS)))
        done.set()
        await poller
    return asked, ready


def test_64_clients_get_every_answer_and_ready_stays_up(tmp_path):
    with fake_vllm(BASE, VLLMFaults(latency_s=0.05)) as vllm:
        vllm.adapters[ADAPTER] = "/models/registry/" + ADAPTER
        with GatewayProcess(gateway_env(vllm.url, tmp_path, GATEWAY_REQUEST_TIMEOUT_S="30")) as gw:
            gw.wait_ready()
            asked, ready = asyncio.run(ask_while_polling_ready(gw.url, 3000, {"question": "What is lochia?"}))
            text = httpx.get(f"{gw.url}/metrics").text
    assert asked == {200: 3000}
    assert set(ready) == {200} and ready[200] >= 5
    assert metric(text, "gateway_requests_total", route="/ask", method="POST", status="200") == 3000
    assert metric(text, "gateway_in_flight_requests") == 1  # the /metrics request itself


@pytest.fixture(scope="session")
def local_model(tmp_path_factory) -> str:
    from core.config import load_config
    from tasks.common.base_models import prepare_base_model

    finetuning = load_config(REPO / "configs/local.yaml").finetuning
    return prepare_base_model.fn(finetuning.base_model, finetuning.base_model_gguf,
                                 tmp_path_factory.mktemp("model") / "base")


def test_long_generations_on_the_local_model_end_at_the_timeout_and_ready_stays_up(local_model, tmp_path):
    """What schemathesis once saw: large max_tokens held the local model and /ready answered 503."""
    env = {"GATEWAY_BACKEND": "local", "GATEWAY_BASE_MODEL": "SmolLM2-135M-Instruct",
           "GATEWAY_BASE_MODEL_PATH": local_model, "GATEWAY_LOGS_DIR": str(tmp_path), "GATEWAY_DOMAIN": "pregnancy",
           "GATEWAY_REQUEST_TIMEOUT_S": "6", "GATEWAY_MAX_TOKENS_LIMIT": "256", "GATEWAY_DEFAULT_MAX_TOKENS": "16"}
    with GatewayProcess(env) as gw:
        gw.wait_ready()
        long = {"question": "Describe every stage of pregnancy in detail, week by week.", "max_tokens": 256,
                "temperature": 0.7}
        asked, ready = asyncio.run(ask_while_polling_ready(gw.url, 12, long))
        assert set(asked) <= {200, 504} and asked[504] > 0, asked  # bounded by the 6 s timeout, never held longer
        assert set(ready) == {200}, ready
        # had the model been left generating the 12 timed-out answers (~3000 tokens at ~10 tokens/s), this short
        # question would wait minutes and hit the client's 60 s timeout
        short = httpx.post(f"{gw.url}/ask", json={"question": "What is lochia?", "max_tokens": 4}, timeout=60)
        over = httpx.post(f"{gw.url}/ask", json={"question": "Why?", "max_tokens": 257})
    assert short.status_code == 200, short.text
    assert over.status_code == 422 and "limit of 256 (local backend)" in over.text
    timeouts = [json.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()]
    assert sum(line["status"] == 504 for line in timeouts) == asked[504]


def test_schemathesis_finds_nothing(tmp_path):
    """Every check schemathesis has, against the running gateway's own OpenAPI schema."""
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert binary, "schemathesis is a dev dependency (pip install -e .[dev])"
    with fake_vllm(BASE) as vllm:
        vllm.adapters[ADAPTER] = "/models/registry/" + ADAPTER
        with GatewayProcess(gateway_env(vllm.url, tmp_path, API_TOKEN="t0ken")) as gw:
            gw.wait_ready()
            result = subprocess.run(
                [binary, "run", f"{gw.url}/openapi.json", "--checks", "all", "-H", "Authorization: Bearer t0ken",
                 "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "60", "--seed", "1",
                 "--max-time", "40"],
                capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"},
                cwd=tmp_path)  # its cache folder goes there
            assert httpx.get(f"{gw.url}/ready").status_code == 200
    assert result.returncode == 0, result.stdout[-6000:]
    assert re.search(r"(\d+) generated, \1 passed", result.stdout), result.stdout[-2000:]


def test_two_workers_share_their_metrics_and_refuse_an_in_process_switch(tmp_path):
    with fake_vllm(BASE) as vllm:
        vllm.adapters[ADAPTER] = "/models/registry/" + ADAPTER
        with GatewayProcess(gateway_env(vllm.url, tmp_path, GATEWAY_WORKERS="2", ADMIN_TOKEN="adm")) as gw:
            gw.wait_ready()
            with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:  # a new connection each
                for i in range(40):
                    assert client.post(f"{gw.url}/ask", json={"question": f"Q{i}?"}).status_code == 200
                counts = {metric(client.get(f"{gw.url}/metrics").text, "gateway_requests_total", route="/ask",
                                 method="POST", status="200") for _ in range(6)}
                switch = client.put(f"{gw.url}/admin/active", json={"name": BASE}, headers={"Authorization": "Bearer adm"})
            time.sleep(0.3)
    assert counts == {40}  # whichever worker answers /metrics counts both
    assert switch.status_code == 409 and "worker processes" in switch.json()["detail"]
    logs = list(tmp_path.glob("requests-*.log"))
    assert len(logs) == 2  # one per worker: a shared rotating file would lose lines
    lines = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    assert sum(line["route"] == "/ask" for line in lines) == 40


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=6))
def test_every_log_line_is_written_even_when_the_gateway_stops_right_after(bursts):
    """The writer thread takes lines in batches; a stop never loses what was logged before it."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        logs = configure_logging(Path(folder), 10**7, 2)
        sent = 0
        for burst in bursts:
            for _ in range(burst):
                logs.requests.info("request", n=sent)
                sent += 1
            time.sleep(0.001)
        logs.api.info("gateway_stopped")
        logs.close()
        lines = (Path(folder) / "requests.log").read_text().splitlines()
        assert [json.loads(line)["n"] for line in lines] == list(range(sent))
        assert json.loads((Path(folder) / "api.log").read_text())["event"] == "gateway_stopped"
