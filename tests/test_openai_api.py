"""The gateway's OpenAI-compatible API through clients no one here wrote: the openai SDK, LangChain's ChatOpenAI
and curl -N; in front of a fake vLLM (its protocol, streaming and the faults a real engine cannot be made to show)
and of the local backend on the tiny model (real generation: streamed = whole = /ask, several adapters, a reader
that leaves stops the generation). The real CPU vLLM: tests/test_vllm_engine.py; the packaged model's adapter
answering as 4d measured: tests/test_finetune_e2e.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.prompts import ANSWER_STYLE
from harness.gateway import ADMIN_TOKEN, GatewayProcess, gateway_in_process
from harness.vllm import VLLMFaults, fake_vllm
from serving.streaming import Stripped
from tests.test_gateway import metric

pytestmark = pytest.mark.e2e

BASE = "meta-llama/Llama-3.2-3B-Instruct"
V1, V2 = "pregnancy-qa-lora-v1.0", "pregnancy-qa-lora-v1.1"
ALIAS, TOKEN = "pregnancy-qa", "t0ken"
QUESTION = [{"role": "user", "content": "What is lochia?"}]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def gateway_env(vllm_url: str, logs: Path, **extra: str) -> dict[str, str]:
    return {"GATEWAY_BACKEND": "vllm", "GATEWAY_VLLM_URL": vllm_url, "GATEWAY_BASE_MODEL": BASE,
            "GATEWAY_ADAPTER_NAME": V1, "GATEWAY_DOMAIN": "pregnancy", "GATEWAY_MODEL_ALIAS": ALIAS,
            "GATEWAY_LOGS_DIR": str(logs), "GATEWAY_REQUEST_TIMEOUT_S": "5", "GATEWAY_ADAPTER_REGISTRY": "/registry",
            "API_TOKEN": TOKEN, "ADMIN_TOKEN": ADMIN_TOKEN, **extra}


@pytest.fixture
def vllm():
    with fake_vllm(BASE, VLLMFaults()) as server:
        server.adapters[V1] = "/registry/" + V1
        yield server


def sdk(client: httpx.Client | None = None, url: str = "http://testserver", token: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=token, http_client=client, max_retries=0)


def joined(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_the_sdk_lists_the_models_and_gets_the_same_answer_whole_streamed_and_from_ask(vllm, tmp_path):
    with gateway_in_process(gateway_env(vllm.url, tmp_path)) as gw:
        client = sdk(gw)
        models = {m.id: m for m in client.models.list()}
        assert list(models) == [ALIAS, BASE, V1]
        assert (models[ALIAS].root, models[ALIAS].parent) == (V1, BASE)  # the alias is the active version
        assert models[V1].parent == BASE and models[BASE].parent is None

        whole = client.chat.completions.create(model=ALIAS, messages=QUESTION, temperature=0)
        assert whole.model == V1 and whole.choices[0].finish_reason == "stop"
        answer = whole.choices[0].message.content
        assert answer == f"[{V1}] What is lochia?"
        assert whole.usage.completion_tokens > 0 and whole.usage.total_tokens > whole.usage.completion_tokens
        # no system message: the ANSWER STYLE prompt it was trained and evaluated with
        assert ANSWER_STYLE in vllm.requests[-1]["system"] and vllm.requests[-1]["temperature"] == 0

        chunks = list(client.chat.completions.create(model=ALIAS, messages=QUESTION, stream=True,
                                                     stream_options={"include_usage": True}))
        assert joined(chunks) == answer and len([c for c in chunks if c.choices]) > 3  # piece by piece
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        assert gw.post("/ask", json={"question": "What is lochia?"}, headers=AUTH).json()["answer"] == answer

        ask = [json.loads(line[6:]) for line in gw.post("/ask", json={"question": "What is lochia?", "stream": True},
                                                         headers=AUTH).text.split("\n\n")
               if line.startswith("data: {")]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in ask if c["choices"]) == answer

        pinned = client.chat.completions.create(model=V1, messages=QUESTION)  # a version's name: pinned
        base = client.chat.completions.create(model=BASE, messages=QUESTION)
        assert pinned.choices[0].message.content == answer and base.choices[0].message.content.startswith(f"[{BASE}]")

        own = client.chat.completions.create(model=ALIAS, messages=[{"role": "system", "content": "Be brief."}, *QUESTION])
        assert own.choices[0].message.content == answer and vllm.requests[-1]["system"] == "Be brief."  # its own wins

        deadline = time.monotonic() + 10  # a streamed answer is counted when the app is done with it, after the client
        while metric(metrics := gw.get("/metrics").text, "gateway_requests_total", route="/v1/chat/completions",
                     status="200") < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(metrics, "gateway_requests_total", route="/v1/chat/completions", status="200") == 5
        assert metric(metrics, "gateway_time_to_first_token_seconds_count", route="/v1/chat/completions") == 1
        assert metric(metrics, "gateway_time_to_first_token_seconds_count", route="/ask") == 1
    logged = [json.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()]
    streamed = [line for line in logged if line.get("stream")]
    assert [(line["route"], line["stream"]) for line in streamed] == [("/v1/chat/completions", "completed"),
                                                                      ("/ask", "completed")]
    assert streamed[0]["completion_tokens"] == whole.usage.completion_tokens


@pytest.mark.parametrize("change, error, param, says", [
    ({"model": "no-such-model"}, openai.NotFoundError, None, "GET /v1/models lists"),
    ({"logprobs": True}, openai.BadRequestError, "logprobs", "unsupported parameter 'logprobs'"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, openai.BadRequestError, "tools", "does not honour"),
    ({"n": 2}, openai.BadRequestError, "n", "less than or equal to 1"),
    ({"max_tokens": 5000}, openai.BadRequestError, "max_tokens", "over this gateway's limit of 1024"),
    ({"max_completion_tokens": 5000}, openai.BadRequestError, "max_completion_tokens", "limit of 1024"),
    ({"temperature": 3}, openai.BadRequestError, "temperature", "less than or equal to 2"),
    ({"messages": []}, openai.BadRequestError, "messages", "at least 1 item"),
    ({"messages": [{"role": "tool", "content": "x"}]}, openai.BadRequestError, "messages.0.role", "'assistant'"),
    ({"messages": [{"role": "user", "content": "x" * 2001}]}, openai.BadRequestError, "messages.0.content",
     "the limit is 2000"),
])
def test_bad_requests_raise_the_sdks_own_exceptions_naming_the_parameter(vllm, tmp_path, change, error, param, says):
    with gateway_in_process(gateway_env(vllm.url, tmp_path)) as gw:
        arguments = {"model": ALIAS, "messages": QUESTION, **change}
        with pytest.raises(error) as raised:
            sdk(gw).chat.completions.create(**{k: v for k, v in arguments.items() if k in ("model", "messages")},
                                            extra_body={k: v for k, v in arguments.items()
                                                        if k not in ("model", "messages")})
        body = raised.value.body
        assert set(body) == {"message", "type", "param", "code"} and says in body["message"]  # OpenAI's error shape
        assert body["param"] == param
        with pytest.raises(openai.AuthenticationError):
            sdk(gw, token="wrong").chat.completions.create(model=ALIAS, messages=QUESTION)
        broken = gw.post("/v1/chat/completions", content=b"{not json", headers=AUTH)
        assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"


def test_an_engine_failure_mid_stream_is_a_last_error_event_the_sdk_raises(vllm, tmp_path):
    vllm.faults.fail_after_words = 1
    with gateway_in_process(gateway_env(vllm.url, tmp_path)) as gw:
        received = []
        with pytest.raises(openai.APIError, match="engine died mid-answer"):
            for chunk in sdk(gw).chat.completions.create(model=ALIAS, messages=QUESTION, stream=True):
                received.append(chunk)
        assert joined(received) == f"[{V1}]"  # what came before the failure
        assert metric(gw.get("/metrics").text, "gateway_errors_total", kind="stream_failed") == 1


def test_the_alias_follows_a_rollout_while_versions_answer_side_by_side_up_to_max_loras(vllm, tmp_path):
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with gateway_in_process(gateway_env(vllm.url, tmp_path, GATEWAY_MAX_LORAS="2")) as gw:
        client = sdk(gw)
        assert gw.post("/admin/adapters", json={"name": V2, "source": V2}, headers=admin).status_code == 201
        third = gw.post("/admin/adapters", json={"name": "other-domain-qa-lora-v1.0", "source": "x"}, headers=admin)
        assert third.status_code == 409 and "serving.max_loras: 2" in third.json()["detail"]

        def ask(model: str) -> str:
            return client.chat.completions.create(model=model, messages=QUESTION).choices[0].message.content

        with ThreadPoolExecutor(4) as pool:  # both versions at once, by name
            answers = list(pool.map(ask, [V1, V2, V1, V2]))
        assert answers == [f"[{V1}] What is lochia?", f"[{V2}] What is lochia?"] * 2
        assert ask(ALIAS).startswith(f"[{V1}]")
        assert gw.put("/admin/active", json={"name": V2}, headers=admin).status_code == 200
        assert ask(ALIAS).startswith(f"[{V2}]") and ask(V1).startswith(f"[{V1}]")  # the pinned name stays pinned
        assert [m.root for m in client.models.list() if m.id == ALIAS] == [V2]


def test_curl_reads_raw_events_and_a_reader_that_leaves_aborts_the_engine_request(vllm, tmp_path):
    curl = shutil.which("curl")
    assert curl, "curl is needed (apt-get install curl)"
    vllm.faults.token_delay_s = 0.05
    with GatewayProcess(gateway_env(vllm.url, tmp_path)) as gw:
        gw.wait_ready()
        body = json.dumps({"model": ALIAS, "messages": QUESTION, "stream": True})
        raw = subprocess.run([curl, "-N", "-sS", "--fail-with-body", "-H", f"Authorization: Bearer {TOKEN}",
                              "-H", "Content-Type: application/json", "-d", body, f"{gw.url}/v1/chat/completions"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        events = [block for block in raw.split("\n\n") if block]
        assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == f"[{V1}] What is lochia?"

        vllm.faults.token_delay_s = 1.0  # a long answer: the reader leaves after its first piece
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json={"model": ALIAS, "messages": QUESTION,
                          "stream": True}, headers=AUTH, timeout=30) as reply:
            next(reply.iter_lines())
        deadline = time.monotonic() + 10
        while not (vllm.aborted and "client_gone" in httpx.get(f"{gw.url}/metrics").text) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert vllm.aborted == [V1]  # the engine's request ended when the gateway's reader left

        vllm.faults.latency_s = 2.0  # queued in the engine: the reader leaves before the first token
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{gw.url}/v1/chat/completions", json={"model": ALIAS, "messages": QUESTION, "stream": True},
                       headers=AUTH, timeout=httpx.Timeout(10, read=0.3))
        deadline = time.monotonic() + 10
        while len(vllm.aborted) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert vllm.aborted == [V1, V1]  # taken out of the engine before it wrote a token
    logged = [json.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()]
    assert [(line["status"], line["stream"]) for line in logged if line.get("stream")] == [
        (200, "completed"), (200, "cancelled"), (499, "cancelled")]


def test_langchain_chat_openai_invokes_and_streams_through_the_gateway(vllm, tmp_path):
    from langchain_openai import ChatOpenAI

    with GatewayProcess(gateway_env(vllm.url, tmp_path)) as gw:
        gw.wait_ready()
        chat = ChatOpenAI(base_url=f"{gw.url}/v1", api_key=TOKEN, model=ALIAS, temperature=0, max_retries=0)
        assert chat.invoke("What is lochia?").content == f"[{V1}] What is lochia?"
        pieces = list(chat.stream("What is lochia?"))
        assert "".join(p.content for p in pieces) == f"[{V1}] What is lochia?" and len(pieces) > 3


@given(st.lists(st.text(alphabet=st.sampled_from(" \n\tab\u00e9\u4e2d."), max_size=6), max_size=8))
def test_stripped_pieces_join_to_the_whole_answer_stripped(pieces):
    strip = Stripped()
    assert "".join(strip(p) for p in pieces) == "".join(pieces).strip()


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A registry of three random LoRA adapters for the tiny model (three domains' versions on one base)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    registry = tmp_path_factory.mktemp("registry")
    for seed, name in enumerate(("a-qa-lora-v1.0", "b-qa-lora-v1.0", "c-qa-lora-v1.0")):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_alpha=64)
        get_peft_model(model, lora).save_pretrained(registry / name)
    return registry


def test_the_local_backend_streams_as_it_answers_serves_adapters_side_by_side_and_stops_for_a_reader_that_left(
        tiny_model: Path, adapters: Path, tmp_path: Path):
    env = {"GATEWAY_BACKEND": "local", "GATEWAY_BASE_MODEL": "tiny", "GATEWAY_BASE_MODEL_PATH": str(tiny_model),
           "GATEWAY_DOMAIN": "pregnancy", "GATEWAY_LOGS_DIR": str(tmp_path), "GATEWAY_ADAPTER_REGISTRY": str(adapters),
           "GATEWAY_MAX_LORAS": "2", "GATEWAY_MAX_TOKENS_LIMIT": "4096", "ADMIN_TOKEN": ADMIN_TOKEN}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with GatewayProcess(env) as gw:
        gw.wait_ready()
        for name in ("a-qa-lora-v1.0", "b-qa-lora-v1.0"):
            assert httpx.post(f"{gw.url}/admin/adapters", json={"name": name, "source": name}, headers=admin,
                              timeout=60).status_code == 201
        third = httpx.post(f"{gw.url}/admin/adapters", json={"name": "c", "source": "c-qa-lora-v1.0"}, headers=admin)
        assert third.status_code == 409 and "unload one that is not active first" in third.json()["detail"]
        client = sdk(url=gw.url, token="unused")  # no API_TOKEN on loopback: any key passes

        def ask(model: str, **options) -> str:
            return client.chat.completions.create(model=model, messages=QUESTION, max_tokens=24, temperature=0,
                                                  **options).choices[0].message.content

        with ThreadPoolExecutor(3) as pool:  # three models at once, each batched on its own
            a, b, base = pool.map(ask, ["a-qa-lora-v1.0", "b-qa-lora-v1.0", "tiny"])
        assert len({a, b, base}) == 3  # each adapter changes the answers its own way
        assert ask("pregnancy") == base  # the alias: the base model while no adapter is active
        httpx.put(f"{gw.url}/admin/active", json={"name": "a-qa-lora-v1.0"}, headers=admin).raise_for_status()
        chunks = list(client.chat.completions.create(model="pregnancy", messages=QUESTION, max_tokens=24,
                                                     temperature=0, stream=True))
        assert joined(chunks) == a == httpx.post(f"{gw.url}/ask", json={"question": "What is lochia?",
                                                                         "max_tokens": 24}).json()["answer"]
        long = client.chat.completions.create(model="pregnancy", messages=QUESTION, max_tokens=300)
        assert long.usage.completion_tokens == 300  # left alone, it writes until the cap

        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json={"model": "pregnancy", "messages": QUESTION,
                          "max_tokens": 4000, "stream": True}, timeout=60) as reply:
            for n, _ in enumerate(reply.iter_lines()):
                if n == 4:
                    break
        assert client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=2).choices  # served next
    logged = [json.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()]
    cancelled = [line for line in logged if line.get("stream") == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["completion_tokens"] < 100  # of 4000: it stopped when the reader left
