"""Stage 5's exports without llama.cpp: which adapters it refuses to convert, the Ollama Modelfile (its TEMPLATE renders
what the model's own chat template renders, for any system prompt and question), the model card's table. The exports
themselves, converted and measured by llama.cpp, are tested in tests/test_llamacpp.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from core.llamacpp import server_command
from core.prompts import conversation
from serving.backends import OpenAIServer
from serving.llamacpp import answer_connections
from tasks.release.exports import (
    ExportFailed,
    export_line,
    gguf_refusals,
    modelfile,
    ollama_template,
    rendered_prompt,
    stop_tokens,
)
from tasks.release.model_card import exports_section
from tests.test_register import save_adapter

PARITY = {"questions": 23, "identical": 21, "headline": "21 of 23 answers identical to 4d; combined 0.4 exported vs "
          "0.41 evaluated (-0.0040, 95 % CI -0.0200 … +0.0100)"}


def test_adapters_llama_cpp_cannot_convert_faithfully_are_refused_with_the_reason(tmp_path: Path):
    assert gguf_refusals(save_adapter(tmp_path / "plain")) == []
    dora = gguf_refusals(save_adapter(tmp_path / "dora", use_dora=True))
    assert dora == ["DoRA (use_dora) is not converted by llama.cpp (llama.cpp #6536)"]
    rslora = gguf_refusals(save_adapter(tmp_path / "rslora", use_rslora=True))
    assert rslora == ["rsLoRA scales by alpha/sqrt(r), llama.cpp applies alpha/r (llama.cpp #11554)"]
    saved = gguf_refusals(save_adapter(tmp_path / "saved", modules_to_save=["lm_head"]))
    assert len(saved) == 1 and "modules_to_save ['lm_head']" in saved[0]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    return AutoTokenizer.from_pretrained(tiny_model)


text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200)


@settings(max_examples=60, deadline=None)
@given(system=text, question=text)
def test_the_modelfile_template_renders_what_the_chat_template_renders(tokenizer, system: str, question: str):
    template = ollama_template(tokenizer)
    assert rendered_prompt(template, system, question) == tokenizer.apply_chat_template(
        conversation(system, question), tokenize=False, add_generation_prompt=True)


def test_the_modelfile_is_greedy_bounded_and_stops_at_the_end_of_turn(tokenizer, tiny_model: Path):
    template, stops = ollama_template(tokenizer), stop_tokens(tokenizer, tiny_model)
    assert stops == ["<|im_end|>"]
    text = modelfile("pregnancy-qa-lora-v1.0", "./gguf/base-f16.gguf", "./gguf/adapter-f16.gguf", template,
                     "You answer.", stops, 64)
    lines = text.splitlines()
    assert "FROM ./gguf/base-f16.gguf" in lines and "ADAPTER ./gguf/adapter-f16.gguf" in lines
    assert f'TEMPLATE """{template}"""' in text and 'SYSTEM """You answer."""' in lines
    assert {'PARAMETER stop "<|im_end|>"', "PARAMETER temperature 0", "PARAMETER repeat_penalty 1",
            "PARAMETER num_predict 64"} <= set(lines)


def test_a_chat_template_ollama_cannot_say_is_refused(tokenizer):
    class Braces:
        def apply_chat_template(self, messages, **_):
            return "{{ raw }}" + "".join(m["content"] for m in messages)

    with pytest.raises(ExportFailed, match="Ollama's TEMPLATE"):
        ollama_template(Braces())


def test_the_card_and_the_cli_say_what_each_export_costs_and_which_to_avoid():
    exports = {
        "merged": {"status": "ok", "files": {f"merged/{n}": 1 for n in ("config.json", "model.safetensors",
                                                                         "tokenizer.json", "generation_config.json")},
                   "bytes": 538_000_000, "parity": {**PARITY, "identical": 23}},
        "gguf-f16": {"status": "ok", "files": {"gguf/base-f16.gguf": 1, "gguf/adapter-f16.gguf": 1},
                     "bytes": 273_000_000, "parity": PARITY},
        "gguf-q8_0": {"status": "worse", "files": {"gguf/base-q8_0.gguf": 1, "gguf/adapter-f16.gguf": 1},
                      "bytes": 150_000_000, "parity": PARITY},
        "ollama": {"status": "refused", "reason": "no GGUF export to run"},
    }
    card = exports_section(exports)
    rows = {line.split(" | ")[0].strip("| "): line for line in card.splitlines() if line.startswith("| ")}
    assert "`merged/` (4 files)" in rows["merged"] and "538 MB" in rows["merged"]
    assert "`gguf/base-f16.gguf`, `gguf/adapter-f16.gguf`" in rows["gguf-f16"] and PARITY["headline"] in rows["gguf-f16"]
    assert "Significantly worse than the evaluated adapter: not recommended" in rows["gguf-q8_0"]
    assert "Significantly worse" not in rows["gguf-f16"]
    assert "refused: no GGUF export to run" in rows["ollama"]
    assert export_line("gguf-f16", exports["gguf-f16"]) == f"gguf-f16: {PARITY['headline']} · 273 MB"
    assert export_line("gguf-q8_0", exports["gguf-q8_0"]).endswith("significantly worse than 4d (not the default)")
    assert export_line("ollama", exports["ollama"]) == "ollama: refused: no GGUF export to run"
    assert exports_section({}) == ""


@given(slots=st.integers(1, 64), connections=st.integers(1, 1024))
def test_the_gateway_never_holds_more_connections_to_a_llama_server_than_it_has_http_threads(slots, connections):
    """cpp-httplib gives a kept-alive connection a thread of its own: one more waited 4 s for a thread to idle out."""
    command = server_command(Path("llama-server"), Path("base.gguf"), None, 8080, slots, 512)
    server_threads = int(command[command.index("--threads-http") + 1])
    answers = answer_connections(slots, connections)
    assert 1 <= answers <= connections and answers + OpenAIServer.CONTROL_CONNECTIONS <= server_threads
    assert answers >= min(connections, slots)  # and every slot can be kept busy
