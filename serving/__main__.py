"""Run the gateway: ``python -m serving --config configs/local.yaml [--backend local] [--port 8000]``.

Settings come from the pipeline config (its ``serving`` section, the adapter stage 4 installed
and the version stage 5 registered), then GATEWAY_* environment variables override them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from serving.app import create_app
from serving.backends import Backend, LocalBackend, VLLMBackend
from serving.settings import GatewaySettings, settings_from_config
from tasks.prompts import system_prompt


def make_backend(settings: GatewaySettings) -> Backend:
    if settings.backend == "vllm":
        return VLLMBackend(settings.vllm_url, settings.request_timeout_s)
    return LocalBackend(settings.base_model, system_prompt(settings.domain), settings.request_timeout_s,
                        settings.max_batch_size, settings.batch_wait_ms)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="pipeline config (without it: GATEWAY_* variables only)")
    parser.add_argument("--backend", choices=["vllm", "local"])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    host, port = args.host or "0.0.0.0", args.port or 8000
    if args.config:
        from flows.config import load_config

        config = load_config(args.config)
        host, port = args.host or config.serving.host, args.port or config.serving.port
        settings = settings_from_config(config, args.backend)
    else:
        settings = GatewaySettings(**({"backend": args.backend} if args.backend else {}))
    uvicorn.run(create_app(settings, make_backend(settings)), host=host, port=port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
