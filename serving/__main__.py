"""Run the gateway: ``python -m serving --config configs/local.yaml [--backend local] [--host H] [--port P]``.

Settings come from the pipeline config (its ``serving`` section, the adapter stage 4 installed
and the version stage 5 registered), then GATEWAY_* environment variables override them.
A non-loopback address without API_TOKEN is refused (serving.allow_unauthenticated overrides).
With a config, the admin token is ADMIN_TOKEN, else ADMIN_TOKEN_FILE, else the file serving.admin_token_file (made on
first start, mode 600), which stage 6 reads too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from core.gateway import (
    GatewaySettings,
    config_admin_token,
    exposure_error,
    settings_environment,
    settings_from_config,
)
from core.llamacpp import llama_server
from serving.app import create_app
from serving.backends import Backend, LocalBackend, VLLMBackend
from serving.llamacpp import LlamaCppBackend


def make_backend(settings: GatewaySettings) -> Backend:
    if settings.backend == "vllm":
        return VLLMBackend(settings.vllm_url, settings.request_timeout_s, settings.backend_connections)
    if settings.backend == "llamacpp":
        # built here, not with the settings: a gateway refused (an exposed address) builds nothing
        binary = Path(settings.llama_server) if settings.llama_server else llama_server()
        return LlamaCppBackend(binary, settings.base_model_path, settings.base_model,
                               settings.request_timeout_s, settings.max_batch_size, settings.max_model_len,
                               settings.logs_dir, settings.backend_connections)
    return LocalBackend(settings.base_model, settings.request_timeout_s,
                        settings.max_batch_size, settings.batch_wait_ms, settings.base_model_path)


def worker_app():
    """Each worker process's app, from the GATEWAY_* variables the parent set (uvicorn's factory)."""
    settings = GatewaySettings()
    return create_app(settings, make_backend(settings))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="pipeline config (without it: GATEWAY_* variables only)")
    parser.add_argument("--backend", choices=["vllm", "llamacpp", "local"])
    parser.add_argument("--host", help="default: serving.host, or 127.0.0.1 without a config")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    host, port = args.host or "127.0.0.1", args.port or 8000
    try:
        if args.config:
            from core.config import ConfigError, load_config

            try:
                config = load_config(args.config)
            except ConfigError as error:
                sys.exit(f"error: {error}")
            host, port = args.host or config.serving.host, args.port or config.serving.port
            config_admin_token(config, make=True)
            settings = settings_from_config(config, args.backend)
        else:
            settings = GatewaySettings(**({"backend": args.backend} if args.backend else {}))
    except (ValidationError, ValueError) as error:
        sys.exit(f"error: {error}")
    if why := exposure_error(host, settings.api_token is not None, settings.allow_unauthenticated):
        sys.exit(f"error: {why}")
    options = {"host": host, "port": port, "log_level": "warning", "access_log": False}
    if settings.workers == 1:
        uvicorn.run(create_app(settings, make_backend(settings)), **options)
        return
    # the workers rebuild these settings; tokens reach them as they reached this process
    os.environ.update(settings_environment(settings))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    uvicorn.run("serving.__main__:worker_app", factory=True, workers=settings.workers, **options)


if __name__ == "__main__":
    main()
