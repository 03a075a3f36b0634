"""vLLM's command line served by the fake vLLM (harness/vllm.py): the stand-in image's entry point,
so `scripts/run_pipeline.sh --serve` can start "vLLM" through compose on a machine without a GPU.

    python -m harness.vllm_standin --model NAME --port 8001 [any other vLLM option, ignored]
"""

from __future__ import annotations

import argparse
import signal

from harness.vllm import fake_vllm


def main() -> None:
    parser = argparse.ArgumentParser(prog="vllm-standin")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8000)
    args, _ = parser.parse_known_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    with fake_vllm(args.model, port=args.port) as server:
        print(f"vllm-standin: {args.model} on {server.url}", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    main()
