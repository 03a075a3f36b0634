"""Configuration: the reference and local profiles load; mistakes fail early, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.config import ConfigError, load_config
from harness.project import REPO


def write(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_reference_config_keeps_the_reference_numbers():
    config = load_config(REPO / "config.yaml")
    assert config.root == REPO
    assert config.data_collector.source == "serpapi"
    assert (config.data_processor.min_tokens, config.data_processor.max_tokens) == (20, 500)
    assert config.dataset_generator.max_tokens == 600
    assert config.dataset_generator.split.model_dump() == {"train": 0.8, "validation": 0.1, "test": 0.1}
    lora = config.finetuning.lora
    assert (lora.r, lora.alpha, lora.dropout) == (16, 32, 0.05)
    assert lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert config.finetuning.quantization == "8bit" and config.finetuning.training.optim == "paged_adamw_32bit"
    assert config.evaluation.weights == {"bertscore_f1": 0.4, "rouge_l": 0.3, "token_f1": 0.2, "rouge_1": 0.1}
    assert (config.serving.port, config.serving.vllm_port) == (8000, 8001)


def test_local_profile_inherits_and_overrides():
    config = load_config(REPO / "configs" / "local.yaml")
    assert config.root == REPO
    assert config.data_collector.source == "local"
    assert config.path(config.data_collector.local.dir) == REPO / "build" / "sample_pdfs"
    assert config.data_processor.converter == "native"
    assert config.dataset_generator.provider == "offline"
    assert config.data_processor.max_tokens == 500  # inherited


@pytest.mark.parametrize(("override", "message"), [
    ({"data_collector": {"num_reslts": 5}}, "data_collector.num_reslts: unknown key"),
    ({"data_collector": {"num_results": "many"}}, "data_collector.num_results: Input should be a valid integer"),
    ({"dataset_generator": {"split": {"train": 1.0}}}, "dataset_generator.split.train: Input should be less than 1"),
    ({"dataset_generator": {"split": {"test": 0}}}, "dataset_generator.split.test: Input should be greater than 0"),
    ({"dataset_generator": {"split": {"train": 0.7}}},
     "dataset_generator.split: train + validation + test must be 1, they sum to 0.9000"),
    ({"evaluation": {"weights": {"bertscore_f1": 0.5, "rouge_l": 0.3, "token_f1": 0.2, "rouge_1": 0.1}}},
     "evaluation.weights: weights must sum to 1"),
    ({"data_processor": {"min_tokens": 600}}, "data_processor: min_tokens (600) must be below max_tokens (500)"),
    ({"data_collector": {"source": "google"}}, "data_collector.source: Input should be 'serpapi' or 'local'"),
    ({"data_collector": {"source": "local"}}, "source 'local' needs local.dir (a folder of documents) or local.url_file"),
    ({"finetuning": {"training": {"strategy": "steps"}}}, "finetuning.training: strategy 'steps' needs max_steps"),
    ({"domain": " ?! "}, "domain: ' ?! ' has no letters or digits to name the adapter after"),
    ({"serving": {"container_ports": [8000, 8011]}}, "serving: serving.container_ports [8000, 8011] must be two ports"),
    ({"serving": {"rollout": "kubernetes"}}, "serving.rollout: Input should be 'in_gateway' or 'containers'"),
    ({"registration": {"exports": {"gguf": []}}}, "registration.exports: ollama: true needs a GGUF export"),
    ({"registration": {"exports": {"gguf": ["q4_k"]}}}, "registration.exports.gguf.0: Input should be 'f32', 'f16'"),
    ({"serving": {"backend": "llamacpp"}, "registration": {"exports": {"gguf": [], "ollama": False}}},
     "serving.backend: llamacpp serves each version's GGUF LoRA: set registration.exports.gguf"),
])
def test_mistakes_name_the_key(tmp_path, override, message):
    path = write(tmp_path, {"inherit": str(REPO / "config.yaml"), **override})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_missing_file_and_bad_yaml_and_loops(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    write(tmp_path, {"inherit": "b.yaml", "domain": "x"}, "a.yaml")
    write(tmp_path, {"inherit": "a.yaml"}, "b.yaml")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")


def test_relative_root_is_taken_from_the_file_that_sets_it(tmp_path):
    (tmp_path / "profiles").mkdir()
    path = write(tmp_path / "profiles", {"inherit": str(REPO / "configs" / "local.yaml"), "root": ".."})
    assert load_config(path).root == tmp_path


def test_vllm_is_started_as_stage_4_evaluated(tmp_path):
    """The engine's command line (--serve-local, the tests, the benchmark): the evaluated dtype, no generation_config
    defaults, LoRA at runtime, the converted base model under the name the gateway asks for."""
    from core.config import EVALUATION_DTYPE, load_config
    from core.engine import engine_command, engine_environment
    from harness.project import write_profile

    config = load_config(write_profile(tmp_path, {"serving": {"vllm_url": "http://localhost:8123", "vllm_port": 8123}}))
    command = engine_command(config, "/engine/bin/python")
    assert command[:3] == ["/engine/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    options = {flag: value for flag, value in zip(command, [*command[1:], ""], strict=True) if flag.startswith("--")}
    assert options["--model"] == str(tmp_path / "models/base") and options["--served-model-name"] == "models/base"
    assert options["--dtype"] == EVALUATION_DTYPE == "float32" and options["--generation-config"] == "vllm"
    assert options["--host"] == "127.0.0.1" and options["--port"] == "8123"
    assert "--enable-lora" in command and options["--max-lora-rank"] == "64"
    assert engine_environment(config)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    bf16 = load_config(write_profile(tmp_path, {"serving": {"dtype": "bfloat16"}}, name="bf16.yaml"))
    assert "--dtype bfloat16" in " ".join(engine_command(bf16, "python"))
