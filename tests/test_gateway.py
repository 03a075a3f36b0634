"""The gateway in front of a fake vLLM (OpenAI API + LoRA endpoints) on loopback: its routes in this process (FastAPI's
TestClient), its start-up, failures of its backend and the live checks with the gateway as a real process."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from core.prompts import ANSWER_STYLE
from harness.gateway import GatewayProcess, gateway_in_process
from harness.vllm import VLLMFaults, fake_vllm

pytestmark = pytest.mark.e2e

BASE = "meta-llama/Llama-3.2-3B-Instruct"
ADAPTER = "pregnancy-qa-lora-v1.0"


def gateway_env(vllm_url: str, logs, **extra: str) -> dict[str, str]:
    return {"GATEWAY_BACKEND": "vllm", "GATEWAY_VLLM_URL": vllm_url, "GATEWAY_BASE_MODEL": BASE,
            "GATEWAY_ADAPTER_NAME": ADAPTER, "GATEWAY_DOMAIN": "pregnancy", "GATEWAY_LOGS_DIR": str(logs),
            "GATEWAY_REQUEST_TIMEOUT_S": "2", "GATEWAY_ADAPTER_REGISTRY": "/models/registry", **extra}


@pytest.fixture
def vllm():
    faults = VLLMFaults()
    with fake_vllm(BASE, faults) as server:
        server.adapters[ADAPTER] = "/adapters/v1.0"  # as `--lora-modules` loads it at start
        yield server


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_ask_health_ready_models_docs_and_prompt_parity(vllm, tmp_path):
    with gateway_in_process(gateway_env(vllm.url, tmp_path)) as gw:
        assert gw.get("/health").json() == {"status": "ok"}
        ready = gw.get("/ready").json()
        assert ready["ready"] and ready["model"] == ADAPTER
        models = gw.get("/models").json()
        assert models["active_adapter"] == ADAPTER and models["adapter_version"] == "1.0"
        assert set(models["loaded"]) == {BASE, ADAPTER}
        assert "/ask" in gw.get("/openapi.json").json()["paths"]
        assert gw.get("/docs").status_code == 200

        reply = gw.post("/ask", json={"question": "What is lochia?"}, headers={"X-Request-ID": "abc-123"})
        assert reply.status_code == 200 and reply.headers["X-Request-ID"] == "abc-123"
        body = reply.json()
        assert body["answer"] == f"[{ADAPTER}] What is lochia?"
        assert body["model"] == BASE and body["adapter"] == ADAPTER and body["adapter_version"] == "1.0"
        assert body["usage"]["completion_tokens"] > 0 and body["latency_ms"] > 0 and body["request_id"] == "abc-123"
        sent = vllm.requests[-1]
        # the same system prompt and greedy decoding as evaluation (4d); vLLM applies the chat template
        assert ANSWER_STYLE in sent["system"] and "pregnancy" in sent["system"] and sent["temperature"] == 0.0
        assert sent["max_tokens"] == 128


@pytest.mark.parametrize("payload, status, reason", [
    ({}, 422, "question"),
    ({"question": ""}, 422, "at least 1 character"),
    ({"question": "Why?", "max_tokens": 0}, 422, "greater than 0"),
    ({"question": "Why?", "temperature": 5}, 422, "less than or equal to 2"),
    ({"question": "x" * 2001}, 422, "the limit is 2000"),
    ({"question": "Why?", "temperature": False}, 422, "temperature"),       # not a silent 0.0
    ({"question": "Why?", "max_tokens": True}, 422, "must be a number"),
    ({"question": "Why?", "max_tokens": "64"}, 422, "must be a number"),
    ({"question": "Why?", "max_tokens": 1025}, 422, "over this gateway's limit of 1024 (vllm backend)"),
    ({"question": "Why?", "stream": 1}, 422, "stream"),                   # not a silent true
    ({"question": "Why?", "n": 2}, 422, "Extra inputs are not permitted"),
    ({"question": ["Why?"]}, 422, "question"),
])
def test_bad_requests_get_4xx_with_a_reason(vllm, tmp_path, payload, status, reason):
    with gateway_in_process(gateway_env(vllm.url, tmp_path), ready=False) as gw:
        reply = gw.post("/ask", json=payload)
        assert reply.status_code == status and reason in json.dumps(reply.json())
    assert not vllm.requests or all(r["question"] == "Hello" for r in vllm.requests)  # only the warm-up


def test_bearer_token_is_required_and_never_logged(vllm, tmp_path):
    token = "s3cret-token-value"
    with gateway_in_process(gateway_env(vllm.url, tmp_path, API_TOKEN=token), ready=False) as gw:
        question = {"question": "What is lochia?"}
        missing = gw.post("/ask", json=question)
        assert missing.status_code == 401 and missing.json()["detail"] == "missing bearer token"
        wrong = gw.post("/ask", json=question, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert gw.put("/admin/active", json={"name": BASE}).status_code == 401
        ok = gw.post("/ask", json=question, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert gw.get("/health").status_code == 200 and gw.get("/metrics").status_code == 200
        metrics = gw.get("/metrics").text
        assert metric(metrics, "gateway_errors_total", kind="unauthorized") == 3
    logs = (tmp_path / "api.log").read_text() + (tmp_path / "requests.log").read_text()
    assert token not in logs and "nope" not in logs


def test_backend_down_is_503_then_recovers_and_slow_is_504(tmp_path):
    faults = VLLMFaults()
    with fake_vllm(BASE, faults) as first:
        first.adapters[ADAPTER] = "/adapters/v1.0"
        port = first.port
        with GatewayProcess(gateway_env(first.url, tmp_path)) as gw:
            gw.wait_ready()
            assert httpx.post(f"{gw.url}/ask", json={"question": "What is lochia?"}).status_code == 200
            first.__exit__(None, None, None)  # vLLM killed mid-traffic
            down = httpx.post(f"{gw.url}/ask", json={"question": "What is lochia?"})
            assert down.status_code == 503 and "unreachable" in down.json()["detail"]
            assert "Traceback" not in down.text and down.json()["request_id"]
            assert httpx.get(f"{gw.url}/ready").status_code == 503
            with fake_vllm(BASE, faults, port=port) as second:  # back on the same port
                second.adapters[ADAPTER] = "/adapters/v1.0"
                assert httpx.get(f"{gw.url}/ready").status_code == 200
                assert httpx.post(f"{gw.url}/ask", json={"question": "What is lochia?"}).status_code == 200
                faults.latency_s = 3  # beyond the 2 s request timeout
                slow = httpx.post(f"{gw.url}/ask", json={"question": "What is lochia?"}, timeout=30)
                # the backend's timeout or the gateway's own, whichever fires first at the same 2 s: both a 504
                assert slow.status_code == 504 and "within" in slow.json()["detail"] and "2 s" in slow.json()["detail"]
                faults.latency_s, faults.healthy = 0, False
                dead = httpx.post(f"{gw.url}/ask", json={"question": "What is lochia?"})
                assert dead.status_code == 503 and httpx.get(f"{gw.url}/ready").status_code == 503
                metrics = httpx.get(f"{gw.url}/metrics").text
    assert metric(metrics, "gateway_errors_total", kind="backend_unavailable") == 2
    assert metric(metrics, "gateway_errors_total", kind="backend_timeout") == 1
    assert metric(metrics, "gateway_requests_total", route="/ask", method="POST", status="504") == 1


def test_a_gateway_loads_its_adapter_into_vllm_at_start_once_and_reports_a_refusal(tmp_path):
    """How a blue/green gateway container starts: it loads its own adapter (unless vLLM has it), then warms up."""
    new = "pregnancy-qa-lora-v1.1"
    with fake_vllm(BASE) as vllm:
        env = gateway_env(vllm.url, tmp_path, GATEWAY_ADAPTER_NAME=new, GATEWAY_ADAPTER_PATH=f"/models/registry/{new}")
        with GatewayProcess(env) as gw:
            gw.wait_ready()
            assert vllm.adapters == {new: f"/models/registry/{new}"}
            assert httpx.post(f"{gw.url}/ask", json={"question": "Why?"}).json()["answer"] == f"[{new}] Why?"
        with GatewayProcess(env) as restarted:  # vLLM already has it: no second load (vLLM would refuse it)
            restarted.wait_ready()
        vllm.adapters.clear()
        vllm.faults.refuse_load.add(new)
        with GatewayProcess(env) as refused:
            deadline = time.monotonic() + 30
            while not (ready := httpx.get(f"{refused.url}/ready")).json()["warmup_error"]:
                assert time.monotonic() < deadline, ready.json()
                time.sleep(0.2)
            assert ready.status_code == 503
            assert f"No adapter found for /models/registry/{new}" in ready.json()["warmup_error"]


def test_a_gateway_never_claims_an_adapter_its_vllm_lost(vllm, tmp_path):
    """vLLM restarted under a running gateway (its runtime-loaded adapters gone): not ready, naming the fix, and
    /models reports no active adapter, so stage 6 loads one again instead of calling it already active."""
    with gateway_in_process(gateway_env(vllm.url, tmp_path)) as gw:
        assert gw.get("/models").json()["active_adapter"] == ADAPTER
        vllm.adapters.clear()
        ready = gw.get("/ready")
        assert ready.status_code == 503
        assert f"'{ADAPTER}' is not loaded in the backend" in ready.json()["warmup_error"]
        assert "--stage 6" in ready.json()["warmup_error"]
        models = gw.get("/models").json()
        assert models["active_adapter"] is None and models["adapter_version"] is None and models["loaded"] == [BASE]
        vllm.adapters[ADAPTER] = "/adapters/v1.0"  # loaded again (stage 6): ready again
        assert gw.get("/ready").status_code == 200


def test_metrics_and_request_logs_record_each_request(vllm, tmp_path):
    with gateway_in_process(gateway_env(vllm.url, tmp_path)) as gw:
        for i in range(3):
            assert gw.post("/ask", json={"question": f"Question {i}?"},
                              headers={"X-Request-ID": f"req-{i}"}).status_code == 200
        assert gw.post("/ask", json={"question": "x" * 5000}).status_code == 422
        assert gw.get("/nowhere").status_code == 404
        text = gw.get("/metrics").text
        assert metric(text, "gateway_requests_total", route="/ask", method="POST", status="200") == 3
        assert metric(text, "gateway_requests_total", route="/ask", method="POST", status="422") == 1
        assert metric(text, "gateway_requests_total", route="unmatched", method="GET", status="404") == 1
        assert metric(text, "gateway_request_latency_seconds_count", route="/ask") == 4  # 3 answered + 1 refused
        assert metric(text, "gateway_backend_latency_seconds_count", backend="vllm") == 3
        assert metric(text, "gateway_tokens_total", direction="out") > 0
        assert metric(text, "gateway_errors_total", kind="invalid_request") == 1  # the question over the limit
        assert f'adapter="{ADAPTER}"' in text and 'adapter_version="1.0"' in text and 'backend="vllm"' in text
        time.sleep(0.2)
    lines = [json.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()]
    asks = [line for line in lines if line["route"] == "/ask" and line["status"] == 200]
    assert [line["request_id"] for line in asks] == ["req-0", "req-1", "req-2"]
    assert all(line["latency_ms"] > 0 and line["completion_tokens"] > 0 and line["prompt_tokens"] > 0 for line in asks)
    events = [json.loads(line)["event"] for line in (tmp_path / "api.log").read_text().splitlines()]
    assert "gateway_ready" in events


def test_the_live_checks_pass_against_a_running_gateway(vllm, tmp_path):
    """What `scripts/run_pipeline.sh --test` runs, against a gateway started here."""
    import os
    import subprocess
    import sys

    from harness.project import REPO

    with GatewayProcess(gateway_env(vllm.url, tmp_path, API_TOKEN="t0ken")) as gw:
        gw.wait_ready()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/live"], cwd=REPO,
                                capture_output=True, text=True, timeout=300,
                                env={**os.environ, "GATEWAY_URL": gw.url, "API_TOKEN": "t0ken"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert "6 passed" in result.stdout


def test_alert_rules_and_scrape_config_use_metrics_the_gateway_exports(vllm, tmp_path):
    import re

    import yaml

    from harness.project import REPO

    rules = yaml.safe_load((REPO / "deployments/alerts.yml").read_text())
    scrape = yaml.safe_load((REPO / "deployments/prometheus.yml").read_text())
    assert {job["job_name"] for job in scrape["scrape_configs"]} == {"gateway", "vllm"}
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = set(re.findall(r"\bgateway_[a-z_]+", " ".join(expressions)))
    with gateway_in_process(gateway_env(vllm.url, tmp_path)) as gw:
        gw.post("/ask", json={"question": "What is lochia?"})
        gw.post("/ask", json={})
        exported = set(re.findall(r"^(gateway_[a-z_]+)", gw.get("/metrics").text, re.MULTILINE))
    assert used and used <= exported, used - exported
