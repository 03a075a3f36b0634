"""Checks against a gateway that is already running (``scripts/run_pipeline.sh --test``).

GATEWAY_URL names it (API_TOKEN when it has one). Not part of the offline suite, which starts
its own servers; tests/test_gateway.py runs these against one it starts, so they stay true.
"""

from __future__ import annotations

import os

import httpx
import pytest

URL = os.environ.get("GATEWAY_URL", "")
TOKEN = os.environ.get("API_TOKEN", "")
AUTH = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}


@pytest.fixture(scope="module", autouse=True)
def gateway_is_named():
    if not URL:
        pytest.fail("GATEWAY_URL is not set: run through scripts/run_pipeline.sh --test, or export it")


def test_health_and_ready():
    assert httpx.get(f"{URL}/health", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{URL}/ready", timeout=10)
    assert ready.status_code == 200, ready.json()


def test_models_name_the_active_adapter():
    models = httpx.get(f"{URL}/models", timeout=10).json()
    assert models["base_model"] and models["base_model"] in models["loaded"]
    assert models["active_adapter"] is None or models["active_adapter"] in models["loaded"]


def test_ask_answers_with_usage_and_version():
    reply = httpx.post(f"{URL}/ask", json={"question": "What is this assistant for?", "max_tokens": 32},
                       headers=AUTH, timeout=120)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["answer"].strip() and body["usage"]["completion_tokens"] > 0
    adapter = body["adapter"] or ""
    assert body["adapter_version"] == (adapter.rsplit("-v", 1)[1] if "-v" in adapter else None)
    assert reply.headers["X-Request-ID"] == body["request_id"]


def test_an_openai_client_streams_the_answer_ask_gives():
    import openai

    client = openai.OpenAI(base_url=f"{URL}/v1", api_key=TOKEN or "unused", max_retries=0, timeout=120)
    alias = next(iter(client.models.list())).id
    question = [{"role": "user", "content": "What is this assistant for?"}]
    chunks = client.chat.completions.create(model=alias, messages=question, max_tokens=32, temperature=0, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ask = httpx.post(f"{URL}/ask", json={"question": question[0]["content"], "max_tokens": 32}, headers=AUTH,
                     timeout=120).json()
    assert streamed == ask["answer"]


def test_bad_requests_are_refused_with_a_reason():
    assert httpx.post(f"{URL}/ask", json={}, headers=AUTH, timeout=10).status_code == 422
    too_long = httpx.post(f"{URL}/ask", json={"question": "x" * 100_000}, headers=AUTH, timeout=10)
    assert too_long.status_code == 422 and "limit" in too_long.json()["detail"][0]["msg"]


def test_metrics_count_requests():
    text = httpx.get(f"{URL}/metrics", timeout=10).text
    assert 'gateway_requests_total{method="POST",route="/ask",status="200"}' in text
    assert "gateway_model_info" in text
