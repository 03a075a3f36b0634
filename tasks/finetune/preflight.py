"""Stage 4's preflight: settings this machine cannot honour are refused before any work, naming the setting; nothing
is downgraded silently (bf16 without support, bitsandbytes or DeepSpeed missing, more processes than devices)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from core.config import ConfigError, Finetuning, PipelineConfig, Secrets, accumulation_problem


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def preflight(config: PipelineConfig) -> None:
    f = config.finetuning
    if f.training.bf16:
        import torch

        supported = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_bf16()
        if not supported:
            raise ConfigError("finetuning.training.bf16: true, but this machine has no bf16 support "
                              "(no CUDA GPU with bf16, no avx512_bf16/amx_bf16 CPU): set it to false")
    needs_bnb = [name for name, used in (("finetuning.quantization", f.quantization != "none"),
                                          ("finetuning.training.optim", f.training.optim.startswith("paged_"))) if used]
    if needs_bnb and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"{' and '.join(needs_bnb)}: bitsandbytes is needed and not installed: "
                          "pip install 'bitsandbytes>=0.50' (or quantization: none and optim: adamw_torch)")
    if f.wandb and Secrets().wandb_api_key is None and os.environ.get("WANDB_MODE") != "offline":
        raise ConfigError("finetuning.wandb: true needs WANDB_API_KEY (or WANDB_MODE=offline), or set wandb: false")
    check_processes(f)


def check_processes(f: Finetuning) -> None:
    """Several 4b processes: no more than this machine's GPUs (or, without any, its cores), the global batch
    shared out evenly (num_processes: auto is only known here), DeepSpeed installed when asked for."""
    d = f.distributed
    if d.num_processes == 1:
        return
    import torch

    gpus = torch.cuda.device_count()
    processes = d.processes(gpus)
    if processes == 1:
        return
    available = gpus or os.cpu_count() or 1
    if processes > available:
        raise ConfigError(f"finetuning.distributed.num_processes {processes} is more than this machine's "
                          f"{f'{gpus} visible GPUs' if gpus else f'{available} CPU cores (no GPU is visible)'}: "
                          f"use at most {available}, or auto (one a visible GPU)")
    if problem := accumulation_problem(f.training.gradient_accumulation_steps, processes):
        raise ConfigError(f"finetuning.{problem}")
    if d.strategy == "deepspeed_zero3" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("finetuning.distributed.strategy deepspeed_zero3 needs DeepSpeed: pip install deepspeed "
                          "(or strategy ddp / fsdp)")
