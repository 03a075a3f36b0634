"""Benchmark: the CPU engines side by side, each behind the gateway, with the same adapter and the same questions.

    .venv/bin/python -m bench.engines --config PROJECT/config.yaml [--engines llamacpp local vllm] [--levels 1 4 16]

For a project after stage 5 (the local profile: its registered version has stage 5's GGUF LoRA), one gateway
process at a time on each engine: llama.cpp (llama-server on the base model's GGUF at serving.gguf with the
version's GGUF LoRA), the local backend (transformers in the gateway's process) and the CPU vLLM (its own
environment, started as --serve-local starts it). Each answers 4d's test questions with the registered version at
1, 4 and 16 requests in flight (4d's max_new_tokens, greedy): generated tokens/s as the gateway reports them
(`usage`), and the ratio of each engine to the local backend. The client is this process; on a CPU the engines are
the bottleneck (seconds a request), not it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.gateway import tokens_per_second
from core.config import load_config
from core.results import EvaluationReport, Registration, read
from harness.gateway import ADMIN_TOKEN, GatewayProcess
from harness.vllm_engine import VLLMEngine


def measure(config_path: Path, backend: str, questions: list[str], levels: list[int], max_tokens: int) -> dict:
    """tokens/s and failures at each level, through a gateway on ``backend`` serving the registered version."""
    config = load_config(config_path)
    engine = None
    if backend == "vllm":
        engine = VLLMEngine(config_path, config.path(config.paths.logs) / "vllm-bench.out").__enter__()
    try:
        # tokens/s is the subject, not timeouts: the CPU vLLM takes minutes for 16 answers at once
        environment = {**os.environ, "ADMIN_TOKEN": ADMIN_TOKEN, "GATEWAY_REQUEST_TIMEOUT_S": "1200"}
        with GatewayProcess(environment, args=("--config", config_path.name, "--backend", backend),
                            cwd=str(config_path.parent), ready_timeout_s=600) as gateway:
            gateway.wait_ready(600)
            tokens_per_second(gateway.url, questions[:4], 4, max_tokens)  # warm-up: caches, threads, first batches
            return {level: tokens_per_second(gateway.url, questions, level, max_tokens) for level in levels}
    finally:
        if engine is not None:
            engine.__exit__()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="a project's config after stage 5")
    parser.add_argument("--engines", nargs="+", default=["llamacpp", "local", "vllm"],
                        choices=["llamacpp", "local", "vllm"])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    args.levels = list(dict.fromkeys(args.levels))
    config = load_config(args.config)
    registration = read(config, Registration, "bench.engines")
    questions = [p.question for p in read(config, EvaluationReport, "bench.engines", "eval_finetuned").predictions]
    max_tokens = config.evaluation.max_new_tokens
    print(f"engines behind the gateway: {registration.name}, {len(questions)} test questions, {max_tokens} tokens "
          f"each, greedy; llama.cpp on the base GGUF {config.serving.gguf}; {os.cpu_count()} cores")
    results = {}
    for backend in args.engines:
        results[backend] = measure(args.config, backend, questions, args.levels, max_tokens)
        print(f"  {backend}: " + ", ".join(f"{level} in flight {tps:.1f} tok/s ({failed} failed)"
                                            for level, (tps, failed) in results[backend].items()), flush=True)
    reference = results.get("local")
    print("generated tokens/s (ratio to the local backend):")
    for level in args.levels:
        cells = []
        for backend, measured in results.items():
            tps = measured[level][0]
            ratio = f" ({tps / reference[level][0]:.2f}×)" if reference and backend != "local" else ""
            cells.append(f"{backend} {tps:6.1f}{ratio}")
        print(f"  {level:>3} in flight  " + " | ".join(cells))


if __name__ == "__main__":
    main()
