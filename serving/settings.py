"""Gateway settings: from the environment (GATEWAY_*, API_TOKEN), or built from a pipeline config."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    backend: Literal["vllm", "local"] = "vllm"
    domain: str = "general"
    base_model: str = Field("base", description="the base model's name in vLLM, or its folder for the local backend")
    adapter_name: str | None = Field(None, description="the active LoRA adapter's name (None: serve the base model)")
    adapter_path: str | None = Field(None, description="the adapter loaded at start unless the backend has it: "
                                     "its folder (local), or its path or Hub id as vLLM sees it")
    vllm_url: str = "http://localhost:8001"
    request_timeout_s: float = Field(60.0, gt=0)
    max_question_chars: int = Field(2000, gt=0)
    default_max_tokens: int = Field(128, gt=0)
    max_tokens_limit: int = Field(1024, gt=0)
    max_batch_size: int = Field(8, gt=0)
    batch_wait_ms: float = Field(5.0, ge=0)
    warmup_on_start: bool = True
    drain_timeout_s: float = Field(30.0, gt=0)
    logs_dir: Path = Path("logs")
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    api_token: SecretStr | None = Field(None, validation_alias=AliasChoices("API_TOKEN", "GATEWAY_API_TOKEN"))

    @field_validator("adapter_name", "adapter_path", "api_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        """GATEWAY_ADAPTER_NAME= (empty) serves the base model; an empty API_TOKEN means no token."""
        return None if isinstance(value, str) and not value.strip() else value


def version_of(adapter_name: str | None) -> str | None:
    """``pregnancy-qa-lora-v1.2`` → ``1.2``; None for the base model or an unversioned name."""
    if adapter_name and "-v" in adapter_name:
        return adapter_name.rsplit("-v", 1)[1]
    return None


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
              "adapter_path": str(adapter) if kind == "local" and (adapter / "adapter_config.json").is_file() else None,
              "vllm_url": s.vllm_url, "request_timeout_s": s.request_timeout_s,
              "max_question_chars": s.max_question_chars, "default_max_tokens": config.evaluation.max_new_tokens,
              "warmup_on_start": s.warmup_on_start, "drain_timeout_s": s.drain_timeout_s,
              "logs_dir": config.path(config.paths.logs)}
    overridden = {k.removeprefix("GATEWAY_").lower() for k in os.environ if k.startswith("GATEWAY_")}
    return GatewaySettings(**{k: v for k, v in values.items() if k not in overridden})
