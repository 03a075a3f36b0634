"""Serving, rollout and stage 3 against the real vLLM engine (the CPU build), with the model stage 4 trained.

The gateway in front of it is started as a user starts it (``python -m serving --config``); stage 6 and stage 3
run through pipeline.py. The fake vLLM (tests/test_gateway.py, tests/test_rollout.py) stays for timeouts, 5xx
and refusals, which a real engine cannot be made to show.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.gateway import ADMIN_TOKEN, GatewayProcess
from harness.loopback import free_port
from harness.project import Ran, copy_whole, run_pipeline, write_profile
from harness.vllm_engine import VLLMEngine

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

V1 = "pregnancy-qa-lora-v1.0"
PARITY_QUESTIONS = 6  # of the 35 test questions: the CPU build answers with an adapter at ~2 tokens/s here, so a
# bounded gate keeps each rollout near a minute (the whole test set is measured by bench.gateway --engine and docs)


def cli(root: Path, config: str, *args: str):
    return run_pipeline(root / config, *args, env={**os.environ, "WANDB_MODE": "offline", "ADMIN_TOKEN": ADMIN_TOKEN})


@pytest.fixture(scope="module")
def project(registered_project: Ran, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole copy of the project of stages 4-5 (shared with stage 4's tests), with a profile serving through vLLM."""
    root = copy_whole(registered_project.root, tmp_path_factory.mktemp("engine"))
    port = free_port()
    write_profile(root, {"serving": {
        "backend": "vllm", "vllm_url": f"http://127.0.0.1:{port}", "vllm_port": port, "max_model_len": 2048,
        "cpu_kv_cache_gib": 1, "request_timeout_s": 300, "smoke_questions": 2,
        "parity_questions": PARITY_QUESTIONS}},
        name="vllm.yaml", inherit="config.yaml", root=None)
    return root


@pytest.fixture(scope="module")
def engine(project: Path):
    with VLLMEngine(project / "vllm.yaml", project / "logs/vllm.out") as running:
        yield running


@pytest.fixture(scope="module")
def gateway(project: Path, engine: VLLMEngine):
    with GatewayProcess({"ADMIN_TOKEN": ADMIN_TOKEN}, args=("--config", "vllm.yaml"), cwd=str(project)) as running:
        running.wait_ready(300)
        settings = (project / "vllm.yaml").read_text() + f"  gateway_url: {running.url}\n"
        (project / "vllm.yaml").write_text(settings)  # stage 6 finds this gateway
        yield running


def register(project: Path, name: str, change=None) -> None:
    """What stage 5 leaves for a next version: its folder in the registry and registration.json naming it; its
    weights are v1.0's, changed by ``change`` (a function of each LoRA B matrix)."""
    registry = project / "models/registry"
    shutil.rmtree(registry / name, ignore_errors=True)
    shutil.copytree(registry / V1, registry / name)
    if change is not None:
        weights = registry / name / "adapter_model.safetensors"
        tensors = load_file(weights)
        save_file({k: change(v) if "lora_B" in k else v for k, v in tensors.items()}, weights)
    record = json.loads((project / "reports/registration.json").read_text())
    record.update(name=name, location=str(registry / name))
    (project / "reports/registration.json").write_text(json.dumps(record))


def active(gateway: GatewayProcess) -> str | None:
    return httpx.get(f"{gateway.url}/models", timeout=10).json()["active_adapter"]


def test_the_gateway_loads_its_adapter_into_vllm_and_answers_as_4d_measured(project, engine, gateway):
    models = httpx.get(f"{gateway.url}/models", timeout=10).json()
    assert models["backend"] == "vllm" and models["active_adapter"] == V1
    assert V1 in engine.models() and models["loaded"] == engine.models()  # vLLM's own list, not the gateway's belief
    report = json.loads((project / "reports/eval_finetuned.json").read_text())
    question, tokens = report["predictions"][-1], report["settings"]["max_new_tokens"]
    reply = httpx.post(f"{gateway.url}/ask", json={"question": question["question"], "max_tokens": tokens}, timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.json()["answer"] == question["prediction"] and reply.json()["adapter_version"] == "1.0"


def test_a_new_version_rolls_out_through_the_parity_gate_and_the_old_one_is_unloaded(project, engine, gateway):
    previous = active(gateway)
    register(project, "pregnancy-qa-lora-v1.1")
    result = cli(project, "vllm.yaml", "--stage", "6")
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((project / "reports/rollout.json").read_text())
    assert record["status"] == "switched" and record["previous"] == previous
    parity = record["parity"]
    assert parity["questions"] == PARITY_QUESTIONS and parity["dtype"] == "float32"
    # float32, greedy, the same prompt and template, generation_config off: vLLM answers as 4d measured
    assert parity["identical"] >= PARITY_QUESTIONS - 1, parity["differing"]
    assert parity["combined"]["high"] >= -record["parity"]["margin"]
    assert f"6 parity: {parity['identical']} of {PARITY_QUESTIONS} answers identical to 4d" in result.stdout
    assert "As served" in (project / "reports/index.html").read_text()
    assert set(engine.models()) == {"models/base", "pregnancy-qa-lora-v1.1"}  # the previous version is unloaded
    reply = httpx.post(f"{gateway.url}/ask", json={"question": "What is folic acid for?"}, timeout=120).json()
    assert reply["adapter"] == "pregnancy-qa-lora-v1.1" and reply["answer"]


def test_an_adapter_that_scores_worse_as_served_is_rolled_back_by_the_parity_gate(project, engine, gateway):
    previous = active(gateway)
    register(project, "pregnancy-qa-lora-v1.2", torch.neg)  # the fine-tuning's change, reversed: worse than 4d measured
    result = cli(project, "vllm.yaml", "--stage", "6")
    assert result.returncode == 1
    assert "parity gate:" in result.stderr and f"{previous} is still serving" in result.stderr
    record = json.loads((project / "reports/rollout.json").read_text())
    assert record["status"] == "rolled_back" and record["parity"]["combined"]["high"] < -record["parity"]["margin"]
    assert active(gateway) == previous and "pregnancy-qa-lora-v1.2" not in engine.models()


def test_an_adapter_that_answers_like_the_base_model_is_rolled_back_by_the_smoke_test(project, engine, gateway):
    previous = active(gateway)
    register(project, "pregnancy-qa-lora-v1.3", torch.zeros_like)  # LoRA B = 0: the adapter changes nothing
    result = cli(project, "vllm.yaml", "--stage", "6")
    assert result.returncode == 1 and "answers exactly like the base model" in result.stderr
    assert "parity" not in json.loads((project / "reports/rollout.json").read_text())  # it never got that far
    assert active(gateway) == previous and "pregnancy-qa-lora-v1.3" not in engine.models()


def engine_metric(engine: VLLMEngine, name: str) -> float:
    """The sum of a vLLM metric over its labels (one model here)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in httpx.get(f"{engine.url}/metrics", timeout=10).text.splitlines()
               if line.startswith((name + "{", name + " ")))


def test_openai_clients_stream_versions_side_by_side_and_a_reader_that_leaves_aborts_the_engine(project, engine,
                                                                                                 gateway):
    import openai

    report = json.loads((project / "reports/eval_finetuned.json").read_text())
    question, tokens = report["predictions"][-1], report["settings"]["max_new_tokens"]
    asked = [{"role": "user", "content": question["question"]}]
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    assert next(m.id for m in client.models.list()) == "pregnancy-qa"
    chunks = list(client.chat.completions.create(model="pregnancy-qa", messages=asked, max_tokens=tokens, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ask = httpx.post(f"{gateway.url}/ask", json={"question": question["question"], "max_tokens": tokens}, timeout=300)
    # every version registered here has v1.0's weights or was rolled back: the alias answers as 4d measured
    assert streamed == ask.json()["answer"] == question["prediction"]
    assert chunks[-1].usage.completion_tokens == ask.json()["usage"]["completion_tokens"]

    other = "other-domain-qa-lora-v1.0"  # another domain's adapter on the same base
    registry = project / "models/registry"
    shutil.rmtree(registry / other, ignore_errors=True)
    shutil.copytree(registry / V1, registry / other)
    weights = registry / other / "adapter_model.safetensors"
    save_file({k: torch.neg(v) if "lora_B" in k else v for k, v in load_file(weights).items()}, weights)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.post(f"{gateway.url}/admin/adapters", json={"name": other, "source": other}, headers=admin,
                      timeout=120).status_code == 201
    try:
        with ThreadPoolExecutor(2) as pool:  # both in one engine at once, each by its name
            replies = list(pool.map(lambda model: client.chat.completions.create(
                model=model, messages=asked, max_tokens=tokens, temperature=0), ["pregnancy-qa", other]))
        assert [r.model for r in replies] == [active(gateway), other]
        assert replies[0].choices[0].message.content != replies[1].choices[0].message.content
    finally:
        httpx.delete(f"{gateway.url}/admin/adapters/{other}", headers=admin, timeout=60)

    generated = engine_metric(engine, "vllm:generation_tokens_total")
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=300, json={
            "model": "pregnancy-qa", "messages": asked, "max_tokens": 1500, "stream": True}) as reply:
        for n, _ in enumerate(reply.iter_lines()):
            if n == 6:  # three pieces read, then the reader leaves
                break
    deadline = time.monotonic() + 60
    while engine_metric(engine, "vllm:num_requests_running") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engine_metric(engine, "vllm:num_requests_running") == 0  # ~4 min of generation left, aborted at once
    assert engine_metric(engine, "vllm:generation_tokens_total") - generated < 100  # of 1500 asked for


def test_stage_three_on_vllm_finishes_every_group_with_replies_that_parse(project, engine, tmp_path):
    """Provider openai against the engine, generating with the base model: two documents' chunks."""
    chunks = json.loads((project / "data/chunks/chunks.json").read_text())
    documents = sorted({c["doc_sha256"] for c in chunks})[:2]
    folder = tmp_path / "data/chunks"
    folder.mkdir(parents=True)
    (folder / "chunks.json").write_text(json.dumps([c for c in chunks if c["doc_sha256"] in documents]))
    # the local profile's defaults (8 requests in flight, request_timeout_s 60, max_output_tokens 2048, 12 questions a
    # group), which once timed out 6 of 17 groups: streamed, a timeout is a silence, and a saturated engine gets fewer
    write_profile(tmp_path, {"dataset_generator": {
        "provider": "openai", "base_url": f"{engine.url}/v1", "model": "models/base",
        "min_answer_overlap": 0.2,  # a 135M model writes loosely grounded answers: this test is about the protocol
        "split": {"train": 0.5, "validation": 0.25, "test": 0.25}}}, inherit=project / "vllm.yaml")
    result = run_pipeline(tmp_path / "config.yaml", "--stage", "3")
    assert result.returncode == 0, result.stderr[-3000:]  # every group finished (a failed one ends the stage with 1)
    stats = json.loads((tmp_path / "data/qa_dataset/stats.json").read_text())
    assert (stats["provider"], stats["model"]) == ("openai", "models/base")
    # every reply parsed, first time: json_schema (strict, bounded) and max_tokens, so nothing is cut off
    assert stats["unusable_replies"].get("invalid_json", 0) == stats["unusable_replies"].get("missing_fields", 0) == 0
    assert stats["pairs_generated"] > 0
