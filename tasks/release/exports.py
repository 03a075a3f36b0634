"""Stage 5's exports: the version in the forms people run models in, each made by the tool built for it and each
measured against 4d as the served adapter is (tasks.release.parity), so a user knows what a format costs before
shipping it.

- ``merged``: PEFT's ``merge_and_unload`` in the dtype 4d evaluated in, saved as safetensors with the tokenizer (a
  plain transformers or vLLM load); measured through transformers, as 4d generated.
- ``gguf-<type>``: the base model through llama.cpp's ``convert_hf_to_gguf.py`` (once per base model and type, in
  ``paths.gguf``) and the adapter through ``convert_lora_to_gguf.py``, from the pinned llama.cpp, never a writer of
  ours; measured through llama-server (the base GGUF with the LoRA).
- ``ollama``: a Modelfile (FROM the base GGUF, ADAPTER the LoRA, the chat template as TEMPLATE, its stop tokens, the
  ANSWER STYLE prompt as SYSTEM, greedy); measured by giving llama-server the prompt its TEMPLATE renders, raw, with its
  stops and parameters, as Ollama hands it to llama.cpp. Ollama itself is not run here.

llama.cpp converts neither DoRA, rsLoRA's scaling nor ``modules_to_save`` (llama.cpp #6536, #11554): such an adapter
gets no GGUF export, with the reason. Each finished export is kept (``paths.exports``) until its version is published,
so a rerun after a crash measures only what is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from core.config import PipelineConfig
from core.files import atomic_folder, atomic_write_json, atomic_write_text
from core.llamacpp import base_gguf_path, free_port, llama_server, llamacpp_dir, server_command
from core.prompts import conversation
from core.results import EvalSettings, EvaluationReport, Prediction
from tasks.release.parity import measure, parity_sample, significantly_worse

PARITY_CONCURRENCY = 4  # questions in flight on llama-server while an export is measured
SERVER_START_S = 300.0


class ExportFailed(RuntimeError):
    """A converter or the engine measuring an export failed; the message has its own last lines."""


def gguf_refusals(adapter: Path) -> list[str]:
    """Why llama.cpp's LoRA converter cannot convert ``adapter`` faithfully (empty: it can)."""
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    reasons = []
    if config.get("use_dora"):
        reasons.append("DoRA (use_dora) is not converted by llama.cpp (llama.cpp #6536)")
    if config.get("use_rslora"):
        reasons.append("rsLoRA scales by alpha/sqrt(r), llama.cpp applies alpha/r (llama.cpp #11554)")
    if config.get("modules_to_save"):
        reasons.append(f"modules_to_save {config['modules_to_save']} (whole trained layers) are not converted")
    return reasons


def _size(folder: Path, files: list[str]) -> dict:
    sizes = {name: (folder / name).stat().st_size for name in files}
    return {"files": sizes, "bytes": sum(sizes.values())}


# --- merged safetensors ---------------------------------------------------------------------------------------

def merge(base: str, adapter: Path, target: Path) -> list[str]:
    """The adapter merged into the base model, saved (safetensors, tokenizer, generation config) into ``target``."""
    from core.inference import load_model

    model, tokenizer = load_model(base, adapter)
    merged = model.merge_and_unload()
    with atomic_folder(target) as staging:
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.padding_side = "right"  # what a user loading it expects; 4d's left padding is set at load
        tokenizer.save_pretrained(staging)
        for path in (staging, *staging.iterdir()):  # readable by whoever serves it (a temporary folder is 0700)
            path.chmod(0o755 if path.is_dir() else 0o644)
    return sorted(str(p.relative_to(target.parent)) for p in target.iterdir())


def merged_answers(folder: Path, sample: list[Prediction], settings: EvalSettings) -> list[str]:
    """4d's questions through transformers on the merged weights, batched as 4d batched them."""
    from core.inference import generate_answers, load_model

    model, tokenizer = load_model(str(folder))
    return generate_answers(model, tokenizer, [x.question for x in sample], settings.system_prompt,
                            settings.max_new_tokens, settings.batch_size)


# --- GGUF through llama.cpp's converters ----------------------------------------------------------------------

def _convert(script: str, *args: str) -> None:
    source = llamacpp_dir() / "src"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source / "gguf-py"),
                                                                              os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(source / script), *args], capture_output=True, text=True,
                            env=environment)
    if result.returncode != 0:
        raise ExportFailed(f"llama.cpp's {script} failed: {result.stderr.strip()[-800:]}")


def base_gguf(config: PipelineConfig, outtype: str) -> Path:
    """The base model as a GGUF at ``outtype``, converted once (again when its weights change)."""
    from tasks.finetune.evaluate import folder_hash

    base_folder = _base_folder(config)
    target = base_gguf_path(config, outtype)
    stamp, partial = target.with_suffix(".json"), target.with_name(f".{target.name}.partial")
    source = folder_hash(base_folder)
    if target.is_file() and stamp.is_file() and json.loads(stamp.read_text())["source"] == source:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _convert("convert_hf_to_gguf.py", str(base_folder), "--outtype", outtype, "--outfile", str(partial))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    atomic_write_json(stamp, {"source": source, "base": str(base_folder)})
    return target


def adapter_gguf(adapter: Path, base_folder: Path, outtype: str, target: Path) -> None:
    partial = target.with_name(f".{target.name}.partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _convert("convert_lora_to_gguf.py", str(adapter), "--base", str(base_folder), "--outtype", outtype,
                 "--outfile", str(partial))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def lora_type(types: list[str]) -> str:
    """One GGUF LoRA serves every base type: f32 when f32 is asked for, else f16 (a few MB either way)."""
    return "f32" if "f32" in types else "f16"


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a base GGUF is large and the same for every version), else a copy."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@contextmanager
def running_server(base: Path, lora: Path | None, context: int, log: Path) -> Iterator[str]:
    """A llama-server of our own for the duration, on a free loopback port; its URL."""
    port = free_port()
    command = server_command(llama_server(), base, lora, port, PARITY_CONCURRENCY, context)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ExportFailed(f"llama-server exited while loading {base.name} ({log}: "
                                   f"{log.read_text(errors='replace').strip()[-500:]})")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise ExportFailed(f"llama-server did not load {base.name} within {SERVER_START_S:g} s ({log})")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _ask_all(ask, sample: list[Prediction]) -> list[str]:
    with ThreadPoolExecutor(PARITY_CONCURRENCY) as pool:
        return list(pool.map(ask, sample))


def chat_answers(url: str, sample: list[Prediction], settings: EvalSettings, timeout_s: float) -> list[str]:
    """4d's questions through llama-server's chat API (the GGUF's own chat template), greedy, 4d's length."""
    def ask(example: Prediction) -> str:
        response = httpx.post(f"{url}/v1/chat/completions", timeout=timeout_s, json={
            "messages": conversation(settings.system_prompt, example.question),
            "max_tokens": settings.max_new_tokens, "temperature": 0.0})
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"].strip()

    return _ask_all(ask, sample)


# --- the Ollama Modelfile -------------------------------------------------------------------------------------

_SYSTEM, _PROMPT = "\x00SYSTEM\x00", "\x00PROMPT\x00"


def ollama_template(tokenizer) -> str:
    """The model's chat template for one system message and one question, in Ollama's template language: rendered by
    transformers with markers in place of the two, the markers then written as ``{{ .System }}``/``{{ .Prompt }}``."""
    rendered = tokenizer.apply_chat_template([{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _PROMPT}],
                                             tokenize=False, add_generation_prompt=True)
    if rendered.count(_SYSTEM) != 1 or rendered.count(_PROMPT) != 1 or "{{" in rendered or '"""' in rendered:
        raise ExportFailed("the chat template does not render one system message and one question as Ollama's "
                           "TEMPLATE can say")
    return rendered.replace(_SYSTEM, "{{ .System }}").replace(_PROMPT, "{{ .Prompt }}")


def stop_tokens(tokenizer, folder: Path) -> list[str]:
    """The end-of-turn tokens generation stops at: the tokenizer's EOS and the generation config's."""
    ids = {tokenizer.eos_token_id}
    if (config := folder / "generation_config.json").is_file():
        eos = json.loads(config.read_text()).get("eos_token_id")
        ids |= set(eos if isinstance(eos, list) else [eos])
    return sorted({tokenizer.convert_ids_to_tokens(i) for i in ids if i is not None})


def modelfile(name: str, base: str, adapter: str, template: str, system: str, stops: list[str],
              max_tokens: int) -> str:
    """Greedy and bounded as 4d generated (Ollama's defaults sample, penalise repeats and never stop counting)."""
    stop_lines = "".join(f'PARAMETER stop "{stop}"\n' for stop in stops)
    return (f"# {name}: `ollama create {name} -f Modelfile` in this folder\n"
            f"FROM {base}\nADAPTER {adapter}\n"
            f'TEMPLATE """{template}"""\nSYSTEM """{system}"""\n'
            f"{stop_lines}PARAMETER temperature 0\nPARAMETER repeat_penalty 1\nPARAMETER num_predict {max_tokens}\n")


def rendered_prompt(template: str, system: str, question: str) -> str:
    """What Ollama sends its llama.cpp for a TEMPLATE of the two fields it fills."""
    return template.replace("{{ .System }}", system).replace("{{ .Prompt }}", question)


def modelfile_answers(url: str, sample: list[Prediction], template: str, system: str, stops: list[str], max_tokens: int,
                      timeout_s: float) -> list[str]:
    def ask(example: Prediction) -> str:
        response = httpx.post(f"{url}/completion", timeout=timeout_s, json={
            "prompt": rendered_prompt(template, system, example.question), "n_predict": max_tokens,
            "temperature": 0.0, "repeat_penalty": 1.0, "stop": stops})
        response.raise_for_status()
        return response.json()["content"].strip()

    return _ask_all(ask, sample)


# --- the whole step -------------------------------------------------------------------------------------------

def _base_folder(config: PipelineConfig) -> Path:
    """The base model's checkpoint folder, as the converters and PEFT read it: converted from the packaged GGUF once
    (as stage 4 does), a local folder, or a Hub id's downloaded snapshot."""
    from tasks.common.base_models import prepare_base_model

    f = config.finetuning
    location = Path(prepare_base_model(f.base_model, f.base_model_gguf, config.path(config.paths.base_model)))
    if config.path(location).is_dir():
        return config.path(location)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(f.base_model))


def build_exports(config: PipelineConfig, name: str, adapter: Path, folder: Path,
                  eval_report: EvaluationReport) -> dict[str, dict]:
    """Every export ``registration.exports`` asks for, written into ``folder`` (the version's files beside the
    adapter) and measured against ``eval_report`` (4d); export → its record (status ok, worse, refused or failed,
    its files and sizes, its parity). One export failing never stops the others."""
    wanted, s = config.registration.exports, config.serving
    sample, settings = parity_sample(eval_report, s.parity_questions), eval_report.settings
    timeout_s = s.request_timeout_s * 4
    done = folder / ".done"
    records: dict[str, dict] = {}

    def finished(export: str, make) -> None:
        """Run ``make`` (returns the record) unless an earlier run finished this export; a failure is recorded."""
        kept = done / f"{export}.json"
        if kept.is_file():
            records[export] = json.loads(kept.read_text())
            return
        try:
            record = make()
        except Exception as error:  # one export's converter or engine failing leaves the others (and the adapter)
            record = {"status": "failed", "reason": str(error)[:1000]}
        if record["status"] != "failed":
            atomic_write_json(kept, record)
        records[export] = record

    def measured(record: dict, answers: list[str], engine: str) -> dict:
        parity = measure(answers, sample, config.evaluation, eval_report, "exported")
        worse = significantly_worse(parity, s.parity_margin)
        return {**record, "status": "worse" if worse else "ok", "engine": engine, "parity": parity}

    base = _base_folder(config)
    if wanted.merged:
        def make_merged() -> dict:
            files = merge(str(base), adapter, folder / "merged")
            return measured(_size(folder, files), merged_answers(folder / "merged", sample, settings),
                            "transformers (float32)")
        finished("merged", make_merged)

    refusals = gguf_refusals(adapter)
    lora_file = f"gguf/adapter-{lora_type(wanted.gguf)}.gguf"
    for outtype in wanted.gguf:
        def make_gguf(outtype: str = outtype) -> dict:
            if refusals:
                return {"status": "refused", "reason": "; ".join(refusals)}
            if not (folder / lora_file).is_file():
                adapter_gguf(adapter, base, lora_type(wanted.gguf), folder / lora_file)
            base_file = f"gguf/base-{outtype}.gguf"
            _link(base_gguf(config, outtype), folder / base_file)
            with running_server(folder / base_file, folder / lora_file, s.max_model_len,
                              config.path(config.paths.logs) / f"llama-server-export-{outtype}.log") as url:
                answers = chat_answers(url, sample, settings, timeout_s)
            return measured(_size(folder, [base_file, lora_file]), answers, "llama.cpp (llama-server)")
        finished(f"gguf-{outtype}", make_gguf)

    if wanted.ollama:
        def make_ollama() -> dict:
            usable = [t for t in wanted.gguf if records.get(f"gguf-{t}", {}).get("status") in ("ok", "worse")]
            if not usable:
                return {"status": "refused", "reason": "no GGUF export to run: " + "; ".join(
                    records[f"gguf-{t}"].get("reason", "") for t in wanted.gguf)}
            outtype = next((t for t in usable if records[f"gguf-{t}"]["status"] == "ok"), usable[0])
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(base)
            template, stops = ollama_template(tokenizer), stop_tokens(tokenizer, base)
            system, max_tokens = settings.system_prompt, settings.max_new_tokens
            base_file = f"gguf/base-{outtype}.gguf"
            atomic_write_text(folder / "Modelfile", modelfile(name, f"./{base_file}", f"./{lora_file}", template,
                                                              system, stops, max_tokens))
            (folder / "Modelfile").chmod(0o644)  # a file for anyone to read (atomic writes start private)
            with running_server(folder / base_file, folder / lora_file, s.max_model_len,
                              config.path(config.paths.logs) / "llama-server-export-ollama.log") as url:
                answers = modelfile_answers(url, sample, template, system, stops, max_tokens, timeout_s)
            return {**measured(_size(folder, ["Modelfile"]), answers, f"llama.cpp, the Modelfile's prompt ({outtype})"),
                    "gguf": outtype}
        finished("ollama", make_ollama)
    return records


def export_line(export: str, record: dict) -> str:
    """``gguf-f16: 21 of 23 answers identical to 4d; combined … · 266 MB`` (or why there is none)."""
    if record["status"] in ("refused", "failed"):
        return f"{export}: {record['status']}: {record['reason']}"
    mark = " — significantly worse than 4d (not the default)" if record["status"] == "worse" else ""
    return f"{export}: {record['parity']['headline']} · {record['bytes'] / 1e6:.0f} MB{mark}"


def main() -> None:
    """``python -m tasks.release.exports --config FILE``: the base model's GGUF serving.backend: llamacpp runs
    (serving.gguf's type), converted when missing (scripts/run_pipeline.sh --serve-local); prints its path."""
    import argparse

    from core.config import load_config

    parser = argparse.ArgumentParser(prog="python -m tasks.release.exports", description=main.__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    config = load_config(parser.parse_args().config)
    print(base_gguf(config, config.serving.gguf))


if __name__ == "__main__":
    main()
