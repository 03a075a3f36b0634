"""The seed project's config.yaml, key for key, is accepted: mapped onto our layout, each mapping said once.

The fixture is the seed README's "Configuration Reference" as written; a new user's file in that
layout must validate, show where each value came from (--check) and run the local pipeline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from core.config import ConfigError, load_config, resolve_config
from core.naming import slug
from harness.project import REPO, qa_dataset

pytestmark = pytest.mark.e2e

SEED = REPO / "tests" / "fixtures" / "seed_config.yaml"


def write(folder: Path, data: dict, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def seed_with_local_overrides(folder: Path, pdf_dir: Path) -> Path:
    """The seed's file, with configs/local.yaml's overrides on top (offline, CPU, no keys)."""
    local = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    local.pop("inherit"), local.pop("root")
    local["data_collector"]["local"]["dir"] = str(pdf_dir)
    return write(folder, {"inherit": str(SEED), "root": str(folder), **local})


def test_the_seed_reference_loads_with_every_key_mapped_or_explained():
    resolved = resolve_config(SEED)
    c = resolved.config
    assert (c.finetuning.lora.r, c.finetuning.lora.alpha, c.finetuning.lora.dropout) == (16, 32, 0.05)
    t = c.finetuning.training
    assert (t.epochs, t.batch_size, t.learning_rate, t.lr_scheduler, t.weight_decay, t.save_steps) == (
        20, 8, 1e-4, "cosine", 0.01, 100)
    assert c.finetuning.wandb and c.finetuning.wandb_project == "pregnancy-qa-finetune"
    assert c.dataset_generator.split.model_dump() == {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert c.evaluation.weights == {"bertscore_f1": 0.40, "rouge_l": 0.30, "token_f1": 0.20, "rouge_1": 0.10}
    assert (c.serving.vllm_url, c.serving.port, c.serving.request_timeout_s) == ("http://vllm:8001", 8000, 60)
    assert c.data_collector.search_query == "pregnancy pdfs" and c.data_collector.mode == "pdf"
    assert c.evaluation.max_new_tokens == 256 and c.registration.private is False
    notices = "\n".join(resolved.notices)
    for seed_key, ours in [("finetuning.lora_r", "finetuning.lora.r"), ("serving.api_port", "serving.port"),
                           ("evaluation.combined_weights", "evaluation.weights"),
                           ("dataset_generator.train_ratio", "dataset_generator.split"),
                           ("finetuning.lr_scheduler_type", "finetuning.training.lr_scheduler")]:
        assert f"{seed_key} is read as {ours}" in notices
    for explained in ("data_processor.target_tokens", "evaluation.metrics", "evaluation.eval_data",
                      "serving.api_token", "finetuning.fp16"):
        assert f"{explained} has no effect here: " in notices
    assert len(resolved.notices) == len(set(resolved.notices))


def test_each_notice_is_printed_once():
    """A process that loads the config twice (a flow and its subflow) says each mapping once, on stderr."""
    code = f"from core.config import load_config; load_config({str(SEED)!r}); load_config({str(SEED)!r})"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = result.stderr.splitlines()
    assert printed.count("config: seed_config.yaml: finetuning.lora_r is read as finetuning.lora.r") == 1
    assert len(printed) == len(set(printed)) == len(resolve_config(SEED).notices)


@pytest.mark.parametrize(("data", "message"), [
    ({"finetuning": {"lora_r": 8, "lora": {"r": 16}}},
     "finetuning.lora_r (the seed's layout) and finetuning.lora.r set the same thing: keep one"),
    ({"dataset_generator": {"train_ratio": 0.7, "split": {"train": 0.8, "validation": 0.1, "test": 0.1}}},
     "dataset_generator.train_ratio (the seed's layout) and dataset_generator.split set the same thing"),
    ({"finetuning": {"output_dir": "a"}, "evaluation": {}, "paths": {"checkpoints": "b"}},
     "finetuning.output_dir (the seed's layout) and paths.checkpoints set the same thing"),
    ({"finetuning": {"final_model_dir": "a"}, "evaluation": {"adapter_path": "b"}},
     "finetuning.final_model_dir and evaluation.adapter_path both mean paths.lora_weights and differ"),
    ({"serving": {"api_token": "s3cret"}}, "serving.api_token: a token written here ends up in every copy"),
    ({"finetuning": {"fp16": True}}, "finetuning.fp16: true is not supported: use finetuning.bf16"),
    ({"evaluation": {"base_model": "other/model"}, "finetuning": {"base_model": "meta-llama/Llama-3.2-3B-Instruct"}},
     "evaluation.base_model (other/model) differs from finetuning.base_model"),
    ({"finetuning": {"train_data": "elsewhere/train.json"}},
     "finetuning.train_data: elsewhere/train.json: stage 3 writes train.json into paths.qa_dataset"),
])
def test_clashes_and_values_we_cannot_honour_name_the_keys(tmp_path, data, message):
    path = write(tmp_path, {"domain": "pregnancy", **data})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize("mode", ["html", "any"])
def test_the_seeds_html_mode_is_ours_and_pdf_dir_its_earlier_name(tmp_path, mode):
    parent = write(tmp_path, {"domain": "pregnancy", "data_collector": {"source": "local", "local": {"dir": "elsewhere"}}},
                   "parent.yaml")
    resolved = resolve_config(write(tmp_path, {"inherit": str(parent), "root": str(tmp_path),
                                               "data_collector": {"mode": mode, "local": {"pdf_dir": "pages"}}}))
    assert resolved.config.data_collector.mode == mode
    assert resolved.config.data_collector.local.dir == Path("pages")  # the child's folder wins, whatever its name
    assert any("data_collector.local.pdf_dir" in notice for notice in resolved.notices)


def test_the_domain_is_natural_language_and_names_use_its_slug(tmp_path):
    config = load_config(write(tmp_path, {"domain": "Heart failure (adults)", "use_case": "QA"}))
    assert config.domain == "Heart failure (adults)"
    assert config.adapter_stem() == "heart-failure-adults-qa-lora"


@given(st.text(max_size=40))
def test_slugs_are_lowercase_words_joined_by_dashes(text):
    made = slug(text)
    assert re.fullmatch(r"([a-z0-9]+(-[a-z0-9]+)*)?", made)
    assert slug(made) == made


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "pipeline.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def test_check_shows_each_value_and_where_it_came_from(tmp_path, sample_pdf_dir):
    profile = seed_with_local_overrides(tmp_path, sample_pdf_dir)
    result = cli("--config", str(profile), "--check", env={"API_TOKEN": "tok-do-not-print"})
    assert result.returncode == 0, result.stderr
    lines = {line.split(" = ")[0]: line for line in result.stdout.splitlines() if " = " in line}
    assert lines["finetuning.lora.r"].endswith("inherited from seed_config.yaml (seed key finetuning.lora_r)")
    assert lines["finetuning.training.max_steps"].endswith("file config.yaml")  # the local override wins
    assert lines["serving.drain_timeout_s"].endswith("default")
    assert "API_TOKEN: set" in result.stdout and "tok-do-not-print" not in result.stdout + result.stderr
    assert result.stdout.strip().endswith(f"{profile}: valid")
    bad = write(tmp_path, {"inherit": str(SEED), "finetuning": {"lora_r": 4, "lora": {"r": 8}}}, "bad.yaml")
    result = cli("--config", str(bad), "--check")
    assert result.returncode == 2 and "finetuning.lora_r (the seed's layout) and finetuning.lora.r" in result.stderr


def test_the_seed_layout_runs_the_local_pipeline_to_a_dataset(tmp_path, sample_pdf_dir):
    profile = seed_with_local_overrides(tmp_path, sample_pdf_dir)
    result = cli("--config", str(profile), "--start", "1", "--end", "3")
    assert result.returncode == 0, result.stderr
    assert "config: seed_config.yaml: finetuning.lora_r is read as finetuning.lora.r" in result.stderr
    sides = qa_dataset(tmp_path / "data" / "qa_dataset")
    assert all(sides[side] for side in ("train", "validation", "test"))


def test_a_missing_earlier_output_exits_1_naming_the_stage(tmp_path, sample_pdf_dir):
    profile = seed_with_local_overrides(tmp_path, sample_pdf_dir)
    result = cli("--config", str(profile), "--stage", "3")
    assert result.returncode == 1
    assert "stage 3 needs " in result.stderr and "chunks.json: run stage 2 first" in result.stderr
