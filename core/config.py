"""The pipeline configuration: one validated model, checked before any work starts.

A typo in a key, a wrong type or an impossible combination must fail at start with the
key's path in the message, not an hour into training. Profiles (``configs/*.yaml``) may
``inherit`` another file and override only what differs. Secrets never live here: they
come from the environment or ``.env`` (see ``Secrets``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core import seed
from core.naming import adapter_stem, slug

Fraction = Annotated[float, Field(gt=0, lt=1)]
PositiveInt = Annotated[int, Field(gt=0)]
# the dtype 4a, 4c and 4d load the model in (core.inference); serving in another one changes greedy answers
EVALUATION_DTYPE = "float32"


class ConfigError(Exception):
    """A configuration problem, worded for the user: which key, what is wrong, what to do."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(_Section):
    """Where each stage reads and writes, relative to the config's ``root`` (the repo by default)."""

    raw: Path = Path("data/raw")
    processed: Path = Path("data/processed")
    chunks: Path = Path("data/chunks")
    qa_dataset: Path = Path("data/qa_dataset")
    base_model: Path = Path("models/base")
    checkpoints: Path = Path("models/checkpoints")
    lora_weights: Path = Path("models/lora_weights")
    registry: Path = Path("models/registry")
    gguf: Path = Path("models/gguf")  # the base model converted to GGUF once per type (stage 5's exports, llama.cpp)
    exports: Path = Path("models/exports")  # a version's exports while stage 5 builds and measures them
    reports: Path = Path("reports")
    logs: Path = Path("logs")


class LocalSource(_Section):
    """The offline source: a folder of documents (read recursively) and/or a text file of URLs (one per line)."""

    dir: Path | None = None
    url_file: Path | None = None


class DataCollector(_Section):
    source: Literal["serpapi", "local"] = "serpapi"
    search_query: str = "pregnancy guide"
    mode: Literal["pdf", "html", "any"] = "pdf"  # which documents are kept: PDFs, web pages, or both
    num_results: PositiveInt = 20
    results_per_page: Annotated[int, Field(gt=0, le=100)] = 10
    serpapi_endpoint: str = "https://serpapi.com"
    local: LocalSource = LocalSource()
    max_concurrent_downloads: PositiveInt = 16
    max_per_host: PositiveInt = 4
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    read_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    backoff_base_s: Annotated[float, Field(ge=0)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 60.0
    max_file_size_mb: Annotated[float, Field(gt=0)] = 50.0
    max_redirects: Annotated[int, Field(ge=0, le=20)] = 5
    allow_private_addresses: bool = False
    user_agent: str = "domain-llm-pipeline/0.1 (+document collector)"

    @model_validator(mode="after")
    def _local_needs_input(self) -> DataCollector:
        if self.source == "local" and self.local.dir is None and self.local.url_file is None:
            raise ValueError("source 'local' needs local.dir (a folder of documents) or local.url_file")
        return self


class DataProcessor(_Section):
    converter: Literal["standard", "native"] = "standard"
    artifacts_path: Path | None = None
    do_ocr: bool = False
    do_table_structure: bool = True
    min_tokens: PositiveInt = 20
    max_tokens: PositiveInt = 500
    workers: PositiveInt = 2
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = None

    @model_validator(mode="after")
    def _token_window(self) -> DataProcessor:
        if self.min_tokens >= self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must be below max_tokens ({self.max_tokens})")
        if self.dask_address and self.task_runner != "dask":
            raise ValueError("dask_address is set but task_runner is not 'dask'")
        return self


class Split(_Section):
    """Shares of the source documents: train (learned from), validation (picks the checkpoint), test (reported)."""

    train: Fraction = 0.8
    validation: Fraction = 0.1
    test: Fraction = 0.1

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> Split:
        if not math.isclose(self.train + self.validation + self.test, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + validation + test must be 1, they sum to "
                             f"{self.train + self.validation + self.test:.4f}")
        return self


class DatasetGenerator(_Section):
    provider: Literal["gemini", "openai", "offline"] = "gemini"
    model: str = "gemini-2.5-flash"
    base_url: str | None = None
    max_tokens: PositiveInt = 600
    max_output_tokens: PositiveInt = 2048
    questions_per_group: PositiveInt = 5
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.3
    max_concurrent_requests: PositiveInt = 8
    requests_per_minute: PositiveInt = 60
    tokens_per_minute: PositiveInt | None = None
    max_retries: Annotated[int, Field(ge=0, le=10)] = 4
    backoff_base_s: Annotated[float, Field(ge=0)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 60.0
    request_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    min_answer_overlap: Annotated[float, Field(ge=0, le=1)] = 0.5
    near_duplicate_threshold: Fraction = 0.8
    judge: bool = False
    judge_threshold: Annotated[float, Field(ge=0, le=1)] = 0.6
    decontaminate: bool = False  # drop validation/test pairs sharing a 13-word run with training (else flagged only)
    preview_groups: PositiveInt = 3
    input_price_per_mtok: Annotated[float, Field(ge=0)] = 0.30
    output_price_per_mtok: Annotated[float, Field(ge=0)] = 2.50
    split: Split = Split()
    seed: int = 42

    @model_validator(mode="after")
    def _openai_needs_url(self) -> DatasetGenerator:
        if self.provider == "openai" and not self.base_url:
            raise ValueError("provider 'openai' needs base_url (e.g. http://localhost:8001/v1)")
        return self


class Lora(_Section):
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class Training(_Section):
    strategy: Literal["epoch", "steps"] = "epoch"
    epochs: Annotated[float, Field(gt=0)] = 3
    max_steps: PositiveInt | None = None
    batch_size: PositiveInt = 4
    gradient_accumulation_steps: PositiveInt = 4
    learning_rate: Annotated[float, Field(gt=0)] = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    max_seq_length: PositiveInt = 1024
    optim: str = "paged_adamw_32bit"
    bf16: bool = True
    gradient_checkpointing: bool = True
    save_steps: PositiveInt = 50
    logging_steps: PositiveInt = 10
    seed: int = 42

    @model_validator(mode="after")
    def _steps_need_max(self) -> Training:
        if self.strategy == "steps" and self.max_steps is None:
            raise ValueError("strategy 'steps' needs max_steps")
        return self


class Distributed(_Section):
    """4b on several processes (accelerate): one a GPU, or on a CPU-only machine (gloo) one a share of the cores."""

    num_processes: PositiveInt | Literal["auto"] = 1  # per machine; auto: every visible GPU
    strategy: Literal["ddp", "fsdp", "deepspeed_zero3"] = "ddp"
    num_machines: PositiveInt = 1
    machine_rank: Annotated[int, Field(ge=0)] = 0
    main_process_ip: str | None = None  # rank 0's address, for several machines
    main_process_port: Annotated[int, Field(ge=1, le=65535)] = 29500

    @model_validator(mode="after")
    def _machines_need_an_address(self) -> Distributed:
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError(f"num_machines {self.num_machines} needs main_process_ip: the address of the machine "
                             "with machine_rank 0, which every machine can reach")
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank {self.machine_rank} must be below num_machines {self.num_machines}")
        return self

    def processes(self, visible_gpus: int | None = None) -> int:
        """Processes on this machine: ``num_processes``, or with auto every visible GPU (1 without any)."""
        if self.num_processes != "auto":
            return self.num_processes
        if visible_gpus is None:
            import torch

            visible_gpus = torch.cuda.device_count()
        return max(1, visible_gpus)


def accumulation_problem(accumulation: int, processes: int) -> str | None:
    """Why ``processes`` cannot share ``accumulation`` steps (the configured batch is the global one), or None."""
    if accumulation % processes == 0:
        return None
    return (f"training.gradient_accumulation_steps {accumulation} is not divisible by the {processes} processes of "
            f"distributed.num_processes: the configured batch is the global one (each process accumulates "
            f"1/{processes} of its steps); use a multiple of {processes}")


class Finetuning(_Section):
    base_model: str = "meta-llama/Llama-3.2-3B-Instruct"
    base_model_gguf: str | None = Field(
        default=None,
        description="'<package>/<file>.gguf' shipped in an installed PyPI package, converted once into paths.base_model",
    )
    method: Literal["lora", "qlora"] = "lora"
    quantization: Literal["none", "8bit", "4bit"] = "8bit"
    lora: Lora = Lora()
    training: Training = Training()
    wandb: bool = False
    wandb_project: str | None = None   # None: the adapter's name stem ({domain slug}-{use_case}-{method})
    wandb_run_name: str | None = None  # None: W&B picks one
    cleanup_checkpoints: bool = True
    distributed: Distributed = Distributed()

    @field_validator("quantization", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        return "none" if value is None else value

    @model_validator(mode="after")
    def _distributed_fits(self) -> Finetuning:
        d = self.distributed
        if d.strategy == "fsdp" and self.quantization == "8bit":
            raise ValueError("distributed.strategy fsdp cannot shard 8-bit (bitsandbytes Int8) weights: use "
                             "quantization 4bit (QLoRA with FSDP) or none, or strategy ddp")
        if d.strategy == "deepspeed_zero3" and self.quantization != "none":
            raise ValueError(f"distributed.strategy deepspeed_zero3 does not partition {self.quantization} "
                             "(bitsandbytes) weights: use quantization none, or strategy ddp")
        # with auto, the processes are known on the training machine only: stage 4's preflight checks there
        if problem := accumulation_problem(self.training.gradient_accumulation_steps,
                                           d.num_processes if d.num_processes != "auto" else 1):
            raise ValueError(problem)
        return self


class Evaluation(_Section):
    bertscore_model: str = "roberta-large"
    bertscore_num_layers: PositiveInt | None = None
    max_new_tokens: PositiveInt = 128
    batch_size: PositiveInt = 8
    max_validation_questions: PositiveInt | None = 200  # 4c's seeded sample per checkpoint; None: all of them
    resamples: Annotated[int, Field(ge=1000)] = 10000
    confidence: Fraction = 0.95
    seed: int = 42
    judge: bool = False
    weights: dict[Literal["bertscore_f1", "rouge_l", "token_f1", "rouge_1"], float] = {
        "bertscore_f1": 0.40,
        "rouge_l": 0.30,
        "token_f1": 0.20,
        "rouge_1": 0.10,
    }

    @field_validator("weights")
    @classmethod
    def _weights_sum_to_one(cls, weights: dict[str, float]) -> dict[str, float]:
        if not math.isclose(sum(weights.values()), 1.0, abs_tol=1e-6):
            raise ValueError(f"weights must sum to 1, they sum to {sum(weights.values()):.4f}")
        return weights


GGUFType = Literal["f32", "f16", "bf16", "q8_0"]  # llama.cpp's converters' --outtype


class Exports(_Section):
    """What stage 5 publishes beside the adapter, each measured against 4d (docs/exports.md)."""

    merged: bool = True  # the adapter merged into the base model (safetensors, in the dtype 4d evaluated in)
    gguf: list[GGUFType] = ["f16"]  # the base model at these types, and the adapter as a GGUF LoRA (llama.cpp)
    ollama: bool = True  # a Modelfile for the first GGUF type not significantly worse than 4d

    def wanted(self) -> bool:
        return self.merged or bool(self.gguf)  # ollama needs a GGUF type

    @model_validator(mode="after")
    def _ollama_needs_gguf(self) -> Exports:
        if self.ollama and not self.gguf:
            raise ValueError("ollama: true needs a GGUF export (gguf: [f16], for example): Ollama runs GGUF files")
        if len(set(self.gguf)) != len(self.gguf):
            raise ValueError(f"gguf lists a type twice: {self.gguf}")
        return self


class Registration(_Section):
    target: Literal["hub", "local"] = "hub"
    hub_url: str = "https://huggingface.co"
    hf_username: str | None = None
    repo_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] | None = None
    private: bool = True
    version_bump: Literal["minor", "major"] = "minor"
    license: str = "apache-2.0"
    require_improvement: Literal["none", "mean", "ci"] = "ci"
    exports: Exports = Exports()


class TokenLimits(_Section):
    """The largest ``max_tokens`` a request may ask of each backend (the CPU model answers ~10 tokens/s)."""

    vllm: PositiveInt = 1024
    llamacpp: PositiveInt = 1024
    local: PositiveInt = 256


def workers_problem(workers: int, backend: str, rollout: str | None = None) -> str | None:
    """Why ``workers`` gateway processes cannot serve: each is a process of its own, so a model the gateway holds
    (the local and llamacpp backends) would be loaded in each, and an in-gateway switch (``rollout``; None: the
    gateway alone, started by hand) would reach one of them."""
    if workers > 1 and backend != "vllm":
        return (f"{workers} workers need the vllm backend: the {backend} backend holds its model in the gateway's "
                "process (or its children), each worker would load it: run one worker (serving.workers: 1)")
    if workers > 1 and rollout not in (None, "containers"):
        return (f"{workers} workers need rollout: containers: an in-gateway switch would reach one of them: run one "
                "worker (serving.workers: 1)")
    return None


class Serving(_Section):
    backend: Literal["vllm", "llamacpp", "local"] = "vllm"
    gguf: GGUFType = Field("f16", description="llamacpp: the base model's GGUF type llama-server runs (each version's "
                           "GGUF LoRA on top)")
    host: str = "127.0.0.1"
    allow_unauthenticated: bool = False
    admin_token_file: Path = Path("secrets/admin_token")
    workers: PositiveInt = 1
    backend_connections: PositiveInt = 256
    max_tokens_limit: TokenLimits = TokenLimits()
    port: Annotated[int, Field(gt=0, lt=65536)] = 8000
    vllm_url: str = "http://localhost:8001"
    gateway_url: str = "http://localhost:8000"
    backend_registry_dir: str | None = None
    smoke_questions: PositiveInt = 8
    parity_questions: PositiveInt | None = None
    parity_margin: Annotated[float, Field(ge=0)] = 0.01
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = EVALUATION_DTYPE
    cpu_kv_cache_gib: PositiveInt = 4
    vllm_port: Annotated[int, Field(gt=0, lt=65536)] = 8001
    request_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_question_chars: PositiveInt = 2000
    max_lora_rank: PositiveInt = 64
    max_loras: Annotated[int, Field(ge=2, description="adapters loaded at once (vLLM's --max-loras; a rollout "
                                    "loads the new version beside the active one)")] = 4
    max_model_len: PositiveInt = 4096
    gpu_memory_utilization: Fraction = 0.9
    warmup_on_start: bool = True
    vllm_gpus: Literal["all", "none"] = "all"
    prometheus_port: Annotated[int, Field(gt=0, lt=65536)] = 9090
    rollout: Literal["in_gateway", "containers"] = "in_gateway"
    docker_host: str | None = None
    gateway_image: str = "domain-llm-gateway:latest"
    edge_image: str = "domain-llm-edge:latest"
    container_ports: tuple[Annotated[int, Field(gt=1024, lt=65536)], Annotated[int, Field(gt=1024, lt=65536)]] = (8010, 8011)
    container_ready_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    drain_timeout_s: Annotated[float, Field(gt=0)] = 60.0

    @model_validator(mode="after")
    def _ports_apart(self) -> Serving:
        if why := workers_problem(self.workers, self.backend, self.rollout):
            raise ValueError(f"serving.workers: {why}")
        if len({*self.container_ports, self.port}) != 3:
            raise ValueError(f"serving.container_ports {list(self.container_ports)} must be two ports other than "
                             f"serving.port ({self.port}): the blue and green gateways sit behind the edge on them")
        return self


class Retraining(_Section):
    """When a refresh's new data is worth a training run (decided by tasks.finetune.retraining.retraining_due): a
    refresh that changed nothing is never worth one."""

    min_new_train_pairs: PositiveInt = 200
    max_days: PositiveInt | None = None  # a last training run this many days old is redone with whatever is new


class Orchestration(_Section):
    train_deployment: str | None = None
    retraining: Retraining = Retraining()
    result_storage: Path = Path("data/prefect_results")
    result_storage_block: Annotated[str, Field(pattern=r"^[a-z0-9-]+/[A-Za-z0-9_-]+$")] | None = None
    llm_rate_limit: str | None = None
    download_concurrency_limit: str | None = None


class PipelineConfig(_Section):
    domain: Annotated[str, Field(min_length=1, description="natural language; names use its slug")]
    use_case: Annotated[str, Field(min_length=1)] = "qa"
    root: Path = Path(".")
    paths: Paths = Paths()
    data_collector: DataCollector = DataCollector()
    data_processor: DataProcessor = DataProcessor()
    dataset_generator: DatasetGenerator = DatasetGenerator()
    finetuning: Finetuning = Finetuning()
    evaluation: Evaluation = Evaluation()
    registration: Registration = Registration()
    serving: Serving = Serving()
    orchestration: Orchestration = Orchestration()

    @model_validator(mode="after")
    def _llamacpp_has_gguf(self) -> PipelineConfig:
        if self.serving.backend == "llamacpp" and not self.registration.exports.gguf:
            raise ValueError("serving.backend: llamacpp serves each version's GGUF LoRA: set registration.exports.gguf "
                             "(e.g. [f16])")
        return self

    @field_validator("domain", "use_case")
    @classmethod
    def _has_a_name(cls, value: str) -> str:
        if not slug(value):
            raise ValueError(f"{value!r} has no letters or digits to name the adapter after")
        return value.strip()

    def model_alias(self) -> str:
        """The name that always answers with the active version: registration.repo_name, else {domain}-{use_case}."""
        return self.registration.repo_name or f"{slug(self.domain)}-{slug(self.use_case)}"

    def adapter_stem(self) -> str:
        """What every registered version is named after: registration.repo_name, else {domain}-{use_case}-{method}."""
        return self.registration.repo_name or adapter_stem(self.domain, self.use_case, self.finetuning.method)

    def path(self, relative: Path) -> Path:
        """Resolve a configured path against ``root`` (absolute paths are kept as they are)."""
        return relative if relative.is_absolute() else (self.root / relative).resolve()

    def result_storage(self) -> Path | str:
        """Where Prefect persists results and cache records: the block (slug) when set, else the local folder."""
        return self.orchestration.result_storage_block or self.path(self.orchestration.result_storage)


class Secrets(BaseSettings):
    """Keys for the real services, read from the environment or ``.env``; never logged."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    serp_api_key: SecretStr | None = None
    gemini_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    hf_token: SecretStr | None = None
    hf_username: str | None = None
    wandb_api_key: SecretStr | None = None
    api_token: SecretStr | None = None
    admin_token: SecretStr | None = None
    review_token: SecretStr | None = None  # the review app's, beyond loopback (else a random one is made)

    def require(self, name: str, setting: str, alternative: str) -> SecretStr:
        """Return the secret, or fail with one line naming the variable, the setting and the alternative."""
        value = getattr(self, name)
        if value is None or not value.get_secret_value().strip():
            raise ConfigError(f"{name.upper()} is not set: it is needed for {setting}. "
                              f"Set it in the environment or .env, or {alternative}.")
        return value


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists and values are leaves)."""
    found = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            found |= _leaves(value, f"{prefix}{key}.")
        else:
            found[f"{prefix}{key}"] = value
    return found


@dataclass
class Resolved:
    """A validated config, where each value came from, and the notices about seed-layout keys."""

    config: PipelineConfig
    origins: dict[str, str]
    notices: list[str]


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'inherit' loops back to itself")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    try:
        translation = seed.translate(raw, path.name)
    except seed.SeedKeyError as error:
        raise ConfigError(str(error)) from None
    data = translation.data
    if isinstance(data.get("root"), str) and not Path(data["root"]).is_absolute():
        data["root"] = str((path.parent / data["root"]).resolve())
    parent = data.pop("inherit", None)
    kind = "inherited from" if seen else "file"
    origins = {}
    for key in _leaves(data):
        # a seed key may have become a leaf, or a section (split, weights) whose leaves it set
        seed_key = next((seed for ours, seed in translation.aliases.items()
                         if key == ours or key.startswith(f"{ours}.")), None)
        origins[key] = f"{kind} {path.name}" + (f" (seed key {seed_key})" if seed_key else "")
    if parent is None:
        return data, origins, translation.notices
    base, base_origins, base_notices = _read_yaml(path.parent / parent, (*seen, path))
    return _deep_merge(base, data), base_origins | origins, base_notices + translation.notices


def format_validation_error(error: ValidationError, source: Path) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config.yaml)"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def resolve_config(path: Path) -> Resolved:
    """Load, translate seed-layout keys, merge (``inherit``) and validate a config file, keeping each value's origin.

    A relative ``root`` is taken from the folder of the file that sets it; without one, the
    root is the config file's own folder.
    """
    data, origins, notices = _read_yaml(Path(path))
    data.setdefault("root", str(Path(path).resolve().parent))
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, Path(path))) from None
    return Resolved(config, origins, notices)


def describe(resolved: Resolved) -> list[str]:
    """Every setting as ``key = value   origin`` (origin: a file, an inherited profile, a seed key, or the default),
    then the secrets: set or not, never their values."""
    values = _leaves(resolved.config.model_dump(mode="json"))
    width = max(len(f"{key} = {value}") for key, value in values.items() if len(f"{key} = {value}") < 70)
    lines = [f"{f'{key} = {value}':<{width}}  {resolved.origins.get(key, 'default')}" for key, value in values.items()]
    secrets = Secrets()
    lines.append("secrets (environment or .env; values never shown):")
    lines += [f"  {name.upper()}: {'set' if getattr(secrets, name) else 'not set'}" for name in Secrets.model_fields]
    return lines


_reported: set[str] = set()


def load_config(path: Path) -> PipelineConfig:
    """The validated config; each seed-layout notice is printed once per process (to stderr)."""
    resolved = resolve_config(path)
    for notice in resolved.notices:
        if notice not in _reported:
            _reported.add(notice)
            print(f"config: {notice}", file=sys.stderr)
    return resolved.config
