"""Stage 5's exports and serving on llama.cpp, with the model stage 4 trained: the merged weights, the GGUF files and
the Modelfile the local profile's stage 5 wrote, each measured against 4d by the engine it is for; then the gateway
on llama-server (the pinned build, scripts/llamacpp.sh) as a user starts it, and stage 6 rolling a version out on it
through the unchanged smoke test and parity gate. What Ollama itself does with the Modelfile is not run here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
from huggingface_hub import ModelCard

from harness.gateway import ADMIN_TOKEN, GatewayProcess
from harness.project import Ran, copy_whole, run_pipeline, write_profile

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

V1 = "pregnancy-qa-lora-v1.0"


def test_stage_five_publishes_each_export_with_its_parity_on_its_own_engine(registered_project: Ran):
    project, out = registered_project.root, registered_project.result.stdout
    record = json.loads((project / "reports/registration.json").read_text())
    exports, version = record["exports"], project / "models/registry" / V1
    assert list(exports) == ["merged", "gguf-f16", "ollama"]  # the local profile's (and config.yaml's) default
    questions = len(json.loads((project / "reports/eval_finetuned.json").read_text())["predictions"])
    for name, export in exports.items():
        assert export["status"] == "ok", (name, export)
        assert export["parity"]["questions"] == questions
        assert all((version / file).stat().st_size == size for file, size in export["files"].items())
        assert f"5 export {name}: {export['parity']['identical']} of {questions} answers identical to 4d" in out
    # the same float32 weights, merged: transformers answers as 4d did
    assert exports["merged"]["parity"]["identical"] >= questions - 1, exports["merged"]["parity"]["differing"]
    assert exports["merged"]["engine"] == "transformers (float32)"
    assert {"merged/model.safetensors", "merged/config.json", "merged/tokenizer.json"} <= set(exports["merged"]["files"])
    # llama.cpp computes in its own kernels at f16: most answers identical (FACTS: 21 of 23 at 64 tokens)
    assert exports["gguf-f16"]["parity"]["identical"] >= questions * 0.8, exports["gguf-f16"]["parity"]["differing"]
    assert set(exports["gguf-f16"]["files"]) == {"gguf/base-f16.gguf", "gguf/adapter-f16.gguf"}
    assert (project / "models/gguf/base-f16.gguf").samefile(version / "gguf/base-f16.gguf")  # linked, not copied
    modelfile = (version / "Modelfile").read_text().splitlines()
    assert "FROM ./gguf/base-f16.gguf" in modelfile and "ADAPTER ./gguf/adapter-f16.gguf" in modelfile
    assert exports["ollama"]["gguf"] == "f16" and list(exports["ollama"]["files"]) == ["Modelfile"]
    card = ModelCard.load(version / "README.md").text
    assert "## Exports" in card and exports["gguf-f16"]["parity"]["headline"] in card
    assert not (project / "models/exports").exists() or not any((project / "models/exports").iterdir())


@pytest.fixture(scope="module")
def project(registered_project: Ran, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole copy of the registered project, with the llama.cpp profile's serving on top of it."""
    root = copy_whole(registered_project.root, tmp_path_factory.mktemp("llamacpp"))
    write_profile(root, {"serving": {"backend": "llamacpp", "smoke_questions": 2, "parity_questions": 8}},
                  name="llamacpp.yaml", inherit="config.yaml", root=None)
    return root


@pytest.fixture(scope="module")
def gateway(project: Path):
    with GatewayProcess({**os.environ, "ADMIN_TOKEN": ADMIN_TOKEN}, args=("--config", "llamacpp.yaml"),
                        cwd=str(project)) as running:
        running.wait_ready(300)
        settings = (project / "llamacpp.yaml").read_text() + f"  gateway_url: {running.url}\n"
        (project / "llamacpp.yaml").write_text(settings)  # stage 6 finds this gateway
        yield running


def test_the_gateway_serves_the_registered_version_on_llama_server(project: Path, gateway: GatewayProcess):
    import openai

    assert httpx.get(f"{gateway.url}/ready", timeout=10).status_code == 200
    models = httpx.get(f"{gateway.url}/models", timeout=10).json()
    assert models["backend"] == "llamacpp" and models["active_adapter"] == V1
    report = json.loads((project / "reports/eval_finetuned.json").read_text())
    tokens = report["settings"]["max_new_tokens"]
    question = report["predictions"][0]["question"]
    ask = httpx.post(f"{gateway.url}/ask", json={"question": question, "max_tokens": tokens}, timeout=120)
    assert ask.status_code == 200, ask.text
    assert ask.json()["adapter"] == V1 and ask.json()["answer"] and ask.json()["usage"]["completion_tokens"] > 0
    base = httpx.post(f"{gateway.url}/ask", json={"question": question, "max_tokens": tokens,
                                                   "adapter": models["base_model"]}, timeout=120)
    assert base.status_code == 200 and base.json()["answer"] != ask.json()["answer"]  # each model its own server
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(model="pregnancy-qa", max_tokens=tokens, temperature=0, stream=True,
                                                 messages=[{"role": "user", "content": question}],
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ask.json()["answer"]
    assert chunks[-1].usage.completion_tokens == ask.json()["usage"]["completion_tokens"]


def test_stage_six_rolls_a_version_out_on_llama_server_through_the_parity_gate(project: Path, gateway: GatewayProcess):
    registry, name = project / "models/registry", "pregnancy-qa-lora-v1.1"
    shutil.copytree(registry / V1, registry / name)
    record = json.loads((project / "reports/registration.json").read_text())
    record.update(name=name, location=str(registry / name))
    (project / "reports/registration.json").write_text(json.dumps(record))
    result = run_pipeline(project / "llamacpp.yaml", "--stage", "6", env={**os.environ, "ADMIN_TOKEN": ADMIN_TOKEN})
    assert result.returncode == 0, result.stderr[-3000:]
    rollout = json.loads((project / "reports/rollout.json").read_text())
    assert rollout["status"] == "switched" and rollout["backend"] == "llamacpp" and rollout["previous"] == V1
    parity = rollout["parity"]
    assert parity["questions"] == 8 and parity["identical"] >= 6, parity["differing"]
    assert parity["combined"]["high"] >= -parity["margin"]
    assert f"6 parity: {parity['identical']} of 8 answers identical to 4d" in result.stdout
    models = httpx.get(f"{gateway.url}/models", timeout=10).json()
    assert models["active_adapter"] == name and V1 not in models["loaded"]  # its llama-server stopped
    assert httpx.post(f"{gateway.url}/ask", json={"question": "What is folic acid for?"}, timeout=120).json()["adapter"] == name
    # a version without a GGUF LoRA (registered before exports, or with registration.exports.gguf empty) is refused
    bare = "pregnancy-qa-lora-v1.2"
    shutil.copytree(registry / V1, registry / bare, ignore=shutil.ignore_patterns("gguf"))
    refused = httpx.post(f"{gateway.url}/admin/adapters", json={"name": bare, "source": bare},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
    assert refused.status_code == 422, refused.text
    assert "no GGUF LoRA" in refused.text and "registration.exports.gguf" in refused.text
