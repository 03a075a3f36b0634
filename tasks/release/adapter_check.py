"""Refuse, before publishing, an adapter that vLLM would reject or silently serve wrong.

vLLM loads LoRA weights only for the linear projections of the attention and MLP blocks, up
to its ``--max-lora-rank``; it rejects ``modules_to_save`` (whole trained copies of layers)
and does not serve DoRA or LoRA biases. A trained embedding or LM head would be dropped.
Catching this at registration beats discovering it when the rollout fails.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

SERVABLE_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj", "up_proj", "down_proj", "gate_up_proj"}


class AdapterNotServable(ValueError):
    """The adapter uses something the serving backend cannot load; the message lists every problem."""


def servability_problems(adapter: Path, max_lora_rank: int) -> list[str]:
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')}, only LORA is served")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save={config['modules_to_save']} (vLLM rejects adapters with fully trained modules)")
    ranks = [config.get("r", 0), *(config.get("rank_pattern") or {}).values()]
    if max(ranks) > max_lora_rank:
        problems.append(f"rank {max(ranks)} is above serving.max_lora_rank={max_lora_rank}")
    if config.get("use_dora"):
        problems.append("use_dora=true (DoRA adapters are not served)")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        problems.append("LoRA biases are trained (bias must be 'none')")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    unsupported = sorted(set(targets) - SERVABLE_MODULES)
    if unsupported:
        problems.append(f"target_modules {unsupported} are not served (supported: {sorted(SERVABLE_MODULES)})")
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="numpy") as weights:  # names only: no torch
        names = list(weights.keys())
    extra = sorted(key for key in names if "embed_tokens" in key or "lm_head" in key)
    if extra:
        problems.append(f"weights for the embedding or LM head ({extra[0]}{', ...' if len(extra) > 1 else ''}) would be ignored")
    return problems


def check_servable(adapter: Path, max_lora_rank: int) -> None:
    missing = [name for name in ("adapter_config.json", "adapter_model.safetensors") if not (adapter / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter} has no {', '.join(missing)}: run stage 4 first")
    problems = servability_problems(adapter, max_lora_rank)
    if problems:
        raise AdapterNotServable(f"{adapter} cannot be served by vLLM: " + "; ".join(problems))
