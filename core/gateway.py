"""Gateway settings: from the environment (GATEWAY_*, API_TOKEN, ADMIN_TOKEN), or built from a pipeline config.

In core because two sides share them: the gateway reads them, stage 6 hands them to the gateway
containers it starts (as GATEWAY_* variables and token files).

Tokens come from a variable or from a file the variable names (API_TOKEN_FILE, ADMIN_TOKEN_FILE):
containers get files, so `docker inspect` never shows a token.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core import results
from core.config import Evaluation, Paths, PipelineConfig, Secrets, Serving, workers_problem
from core.files import atomic_write_text, sha256_file
from core.llamacpp import base_gguf_path
from core.naming import slug
from core.results import Registration

_DEFAULT = {name: field.default for name, field in Serving.model_fields.items()}  # declared once, in core.config


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    backend: Literal["vllm", "llamacpp", "local"] = _DEFAULT["backend"]
    domain: str = "general"
    model_alias: str | None = Field(None, description="the name that answers with the active version and follows "
                                    "rollouts (/v1): None, the domain's slug")
    base_model: str = Field("base", description="the base model's name (in vLLM, and in every response)")
    base_model_path: str | None = Field(None, description="local backend: the folder it loads the base model from; "
                                        "llamacpp: the base model's GGUF file (never shown to clients); None: the name")
    llama_server: str | None = Field(None, description="llamacpp: the llama-server binary; None: the one "
                                     "scripts/llamacpp.sh builds (built when the gateway starts, if not yet)")
    adapter_name: str | None = Field(None, description="the active LoRA adapter's name (None: serve the base model)")
    adapter_path: str | None = Field(None, description="the adapter loaded at start unless the backend has it: "
                                     "its folder (local), or its path or Hub id as vLLM sees it")
    adapter_registry: str | None = Field(None, description="the folder /admin/adapters may load adapters from, as the "
                                         "backend sees it (vLLM also takes Hub ids); None: Hub ids only")
    vllm_url: str = _DEFAULT["vllm_url"]
    backend_connections: int = Field(_DEFAULT["backend_connections"], gt=0,
                                     description="connections kept open to vLLM (the pool's size)")
    workers: int = Field(_DEFAULT["workers"], gt=0, description="uvicorn worker processes (vLLM backend only)")
    allow_unauthenticated: bool = Field(_DEFAULT["allow_unauthenticated"],
                                        description="serve a non-loopback address without API_TOKEN")
    request_timeout_s: float = Field(_DEFAULT["request_timeout_s"], gt=0)
    max_question_chars: int = Field(_DEFAULT["max_question_chars"], gt=0)
    default_max_tokens: int = Field(Evaluation.model_fields["max_new_tokens"].default, gt=0)
    max_tokens_limit: int = Field(_DEFAULT["max_tokens_limit"].vllm, gt=0)
    max_batch_size: int = Field(8, gt=0, description="requests generated at once (local: a batch; llamacpp: slots)")
    max_model_len: int = Field(_DEFAULT["max_model_len"], gt=0, description="llamacpp: a request's context, in tokens")
    batch_wait_ms: float = Field(5.0, ge=0)
    warmup_on_start: bool = _DEFAULT["warmup_on_start"]
    drain_timeout_s: float = Field(_DEFAULT["drain_timeout_s"], gt=0)
    max_loras: int = Field(_DEFAULT["max_loras"], ge=2, description="adapters loaded at once, at most")
    logs_dir: Path = Paths.model_fields["logs"].default
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    api_token: SecretStr | None = Field(None, validation_alias=AliasChoices("API_TOKEN", "GATEWAY_API_TOKEN"))
    api_token_file: Path | None = Field(None, validation_alias=AliasChoices("API_TOKEN_FILE", "GATEWAY_API_TOKEN_FILE"))
    admin_token: SecretStr | None = Field(None, validation_alias=AliasChoices("ADMIN_TOKEN", "GATEWAY_ADMIN_TOKEN"))
    admin_token_file: Path | None = Field(None, validation_alias=AliasChoices("ADMIN_TOKEN_FILE",
                                                                               "GATEWAY_ADMIN_TOKEN_FILE"))

    @field_validator("adapter_name", "adapter_path", "api_token", "admin_token", "api_token_file", "admin_token_file",
                     "base_model_path", "adapter_registry", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        """GATEWAY_ADAPTER_NAME= (empty) serves the base model; an empty API_TOKEN means no token."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        for name in ("api_token", "admin_token"):
            file = getattr(self, f"{name}_file")
            if getattr(self, name) is None and file is not None:
                setattr(self, name, read_token(file, f"{name.upper()}_FILE"))
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) is over max_tokens_limit "
                             f"({self.max_tokens_limit}): lower it or raise serving.max_tokens_limit.{self.backend}")
        if why := workers_problem(self.workers, self.backend):
            raise ValueError(why)
        if self.backend == "llamacpp" and not self.base_model_path:
            raise ValueError("the llamacpp backend needs base_model_path (the base model's GGUF): python -m serving "
                             "--config finds it")
        return self

    @property
    def alias(self) -> str:
        return self.model_alias or slug(self.domain)

    @property
    def admin(self) -> SecretStr | None:
        """/admin/* takes its own token when there is one, else the API token; without either it is closed."""
        return self.admin_token or self.api_token


def read_token(path: Path, variable: str) -> SecretStr | None:
    """A token file's first line; None when it is empty. A missing or unreadable file is an error naming it."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ValueError(f"{variable} names {path}, which cannot be read ({error.strerror})") from None
    return SecretStr(token) if token else None


def ensure_token_file(path: Path) -> SecretStr:
    """The token in ``path``, made (random, readable by this user only) when the file does not exist yet."""
    if path.is_file() and (token := read_token(path, str(path))):
        return token
    atomic_write_text(path, secrets.token_urlsafe(32) + "\n")  # a temp file of mode 0600, renamed
    return read_token(path, str(path))


def config_admin_token(config: PipelineConfig, make: bool) -> SecretStr | None:
    """The admin token of a gateway started from ``config``, in the order it takes them: ADMIN_TOKEN, the file
    ADMIN_TOKEN_FILE names, the file serving.admin_token_file (random, made here when ``make`` and missing). None:
    /admin takes API_TOKEN (``GatewaySettings.admin``). `python -m serving --config` makes the file; stage 6
    reads the same token to call /admin."""
    if token := Secrets().admin_token:
        return token
    if variable := os.environ.get("ADMIN_TOKEN_FILE"):
        return read_token(Path(variable), "ADMIN_TOKEN_FILE")
    file = config.path(config.serving.admin_token_file)
    return ensure_token_file(file) if make or file.is_file() else None


def exposure_error(host: str, has_token: bool, allow_unauthenticated: bool) -> str | None:
    """Why /ask must not be served on ``host`` (by the gateway, or the edge in front of gateways), or None:
    a non-loopback address needs API_TOKEN unless serving.allow_unauthenticated says otherwise, explicitly."""
    if has_token or allow_unauthenticated or is_loopback(host):
        return None
    return (f"refusing to serve {host} without a token: anyone who reaches it could use the model. Set API_TOKEN "
            "(or API_TOKEN_FILE), bind 127.0.0.1 (serving.host), or set serving.allow_unauthenticated: true")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def adapter_source(config: PipelineConfig, registration: Registration) -> str:
    """Where vLLM loads a registered version from: the Hub repo id, or its registry folder as vLLM sees it."""
    if registration.target == "hub":
        return hub_id(registration)
    folder = config.serving.backend_registry_dir
    return f"{folder.rstrip('/')}/{registration.name}" if folder else registration.location


def hub_id(registration: Registration) -> str:
    return registration.location.rstrip("/").split("/", 3)[-1]


def _adapter(config: PipelineConfig, kind: str) -> tuple[str | None, str | None]:
    """(name, path) of the adapter a gateway serves and loads at start, or (None, None): the base model.

    The version stage 5 registered (vLLM: from where vLLM sees it); else what stage 4 installed, under the stem the
    next version takes: a candidate the promotion gate refused after it is never served as the version it failed to
    replace. Never a name without something to load: a gateway that claims an adapter its backend lacks is never
    ready.
    """
    registration = results.read_if_present(config, Registration)
    adapter = config.path(config.paths.lora_weights)
    if kind == "vllm" and registration:
        return registration.name, adapter_source(config, registration)
    if registration and registration.target == "local":  # llama.cpp: its GGUF LoRA (stage 5's export) is there
        return registration.name, registration.location
    if kind == "llamacpp":  # stage 4's folder has no GGUF
        return None, None
    if (adapter / "adapter_config.json").is_file():
        weights = adapter / "adapter_model.safetensors"
        registered = registration and weights.is_file() and sha256_file(weights) == registration.adapter_sha256
        return (registration.name if registered else config.adapter_stem()), str(adapter)
    return None, None


def _base_model_path(config: PipelineConfig, kind: str) -> str | None:
    if kind == "llamacpp":  # converted by stage 5 or --serve-local (python -m tasks.release.exports)
        return str(base_gguf_path(config, config.serving.gguf))
    if kind == "local" and config.finetuning.base_model_gguf:
        return str(config.path(config.paths.base_model))
    return None


def settings_from_config(config: PipelineConfig, backend: str | None = None) -> GatewaySettings:
    """The gateway for what the pipeline made: the adapter stage 4 installed, named as stage 5 registered it."""
    s, f = config.serving, config.finetuning
    kind = backend or s.backend
    adapter_name, adapter_path = _adapter(config, kind)
    local_name = Path(f.base_model_gguf).name.removesuffix(".gguf") if f.base_model_gguf else f.base_model
    values = {"backend": kind, "domain": config.domain, "model_alias": config.model_alias(),
              "base_model": f.base_model if kind == "vllm" else local_name,
              "base_model_path": _base_model_path(config, kind),
              "adapter_name": adapter_name, "adapter_path": adapter_path,
              "adapter_registry": s.backend_registry_dir or str(config.path(config.paths.registry)),
              "vllm_url": s.vllm_url, "backend_connections": s.backend_connections, "workers": s.workers,
              "allow_unauthenticated": s.allow_unauthenticated, "request_timeout_s": s.request_timeout_s,
              "max_question_chars": s.max_question_chars, "default_max_tokens": config.evaluation.max_new_tokens,
              "max_tokens_limit": getattr(s.max_tokens_limit, kind), "warmup_on_start": s.warmup_on_start,
              "drain_timeout_s": s.drain_timeout_s, "max_loras": s.max_loras, "max_model_len": s.max_model_len,
              "logs_dir": config.path(config.paths.logs),
              "admin_token_file": config.path(s.admin_token_file) if config.path(s.admin_token_file).is_file() else None}
    overridden = {k.removeprefix("GATEWAY_").lower() for k in os.environ if k.startswith("GATEWAY_")}
    overridden |= {"admin_token_file"} if "ADMIN_TOKEN_FILE" in os.environ else set()
    return GatewaySettings(**{k: v for k, v in values.items() if k not in overridden})


def settings_environment(settings: GatewaySettings) -> dict[str, str]:
    """GATEWAY_* variables that rebuild ``settings`` in another process (a worker, a container): never a token,
    only where a token file is."""
    values = settings.model_dump(exclude={"api_token", "admin_token"}, exclude_none=True)
    return {f"GATEWAY_{key.upper()}": str(value) for key, value in values.items()}
