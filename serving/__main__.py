"""Run the gateway: ``python -m serving --config configs/local.yaml [--backend local] [--port 8000]``.

Settings come from the pipeline config (its ``serving`` section, the adapter stage 4 installed
and the version stage 5 registered), then GATEWAY_* environment variables override them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import uvicorn

from serving.app import create_app
from serving.backends import Backend, LocalBackend, VLLMBackend
from serving.settings import GatewaySettings
from tasks.prompts import system_prompt


def settings_from_config(config, backend: str | None = None) -> GatewaySettings:
    """``config``: a loaded pipeline config (flows.config.PipelineConfig)."""
    s, f = config.serving, config.finetuning
    kind = backend or s.backend
    registration = config.path(config.paths.reports) / "registration.json"
    name = (json.loads(registration.read_text())["name"] if registration.is_file()
            else f"{config.domain}-{config.use_case}-{f.method}")
    adapter = config.path(config.paths.lora_weights)
    local_base = str(config.path(config.paths.base_model)) if f.base_model_gguf else f.base_model
    values = {"backend": kind, "domain": config.domain, "base_model": local_base if kind == "local" else f.base_model,
              "adapter_name": name if (adapter / "adapter_config.json").is_file() or kind == "vllm" else None,
              "adapter_path": adapter if kind == "local" and (adapter / "adapter_config.json").is_file() else None,
              "vllm_url": s.vllm_url, "request_timeout_s": s.request_timeout_s,
              "max_question_chars": s.max_question_chars, "default_max_tokens": config.evaluation.max_new_tokens,
              "warmup_on_start": s.warmup_on_start, "logs_dir": config.path(config.paths.logs)}
    overridden = {k.removeprefix("GATEWAY_").lower() for k in os.environ if k.startswith("GATEWAY_")}
    return GatewaySettings(**{k: v for k, v in values.items() if k not in overridden})


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
