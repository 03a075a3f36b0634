"""The seed project's ``config.yaml`` layout, accepted as written and mapped onto ours.

Users arrive with the seed's file (its README's "Configuration Reference"): flat
``finetuning.lora_r``, ``serving.api_port``, ``evaluation.combined_weights.rougeL``... Each
such key is moved to the key it means here, with one notice naming both. A key that has no
meaning here is explained, not silently dropped; the same setting given in both layouts is
an error naming both; a seed value we cannot honour is an error saying what to write instead.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

# seed key (or an earlier name of ours) → our key (the value moves unchanged)
RENAMED = {
    "data_collector.local.pdf_dir": "data_collector.local.dir",
    "evaluation.checkpoint_eval_samples": "evaluation.max_validation_questions",
    "paths.raw_data": "paths.raw",
    "paths.processed_data": "paths.processed",
    "data_collector.query": "data_collector.search_query",
    "finetuning.output_dir": "paths.checkpoints",
    "finetuning.final_model_dir": "paths.lora_weights",
    "finetuning.lora_r": "finetuning.lora.r",
    "finetuning.lora_alpha": "finetuning.lora.alpha",
    "finetuning.lora_dropout": "finetuning.lora.dropout",
    "finetuning.target_modules": "finetuning.lora.target_modules",
    "finetuning.lr_scheduler_type": "finetuning.training.lr_scheduler",
    "finetuning.wandb_enabled": "finetuning.wandb",
    "evaluation.adapter_path": "paths.lora_weights",
    "evaluation.output_dir": "paths.reports",
    "serving.api_port": "serving.port",
    "serving.timeout": "serving.request_timeout_s",
    **{f"finetuning.{key}": f"finetuning.training.{key}" for key in (
        "strategy", "epochs", "max_steps", "batch_size", "gradient_accumulation_steps", "learning_rate",
        "weight_decay", "warmup_ratio", "max_grad_norm", "max_seq_length", "optim", "seed", "bf16", "save_steps",
        "logging_steps")},
}
WEIGHT_NAMES = {"bertscore_f1": "bertscore_f1", "rougeL": "rouge_l", "token_f1": "token_f1", "rouge1": "rouge_1"}
# seed keys with no setting behind them here: why
EXPLAINED = {
    "data_processor.target_tokens": "chunks follow the document's headings; sections over data_processor.max_tokens "
                                    "are split, and chunks outside [min_tokens, max_tokens] dropped",
    "evaluation.eval_data": "4a and 4d evaluate on test.json and 4c on validation.json, a three-way split by "
                            "document (dataset_generator.split)",
    "evaluation.metrics": "ROUGE-1/2/L, BERTScore F1 and token F1 are always computed (no BLEU)",
    "evaluation.quantization": "evaluation loads the base model unquantized, so scores compare across runs",
    "finetuning.fp16": "training runs in bf16 (finetuning.training.bf16) or fp32",
}


class SeedKeyError(ValueError):
    """A seed-layout key whose value cannot be honoured, or that clashes with the same setting in our layout."""


@dataclass
class Translation:
    data: dict[str, Any]
    aliases: dict[str, str] = field(default_factory=dict)   # our key → the seed key it came from
    notices: list[str] = field(default_factory=list)


def _pop(data: dict, dotted: str) -> tuple[bool, Any]:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data.get(part)
        if not isinstance(data, dict):
            return False, None
    return (True, data.pop(leaf)) if leaf in data else (False, None)


_MISSING = object()


def _has(data: dict, dotted: str) -> bool:
    return _get(data, dotted, _MISSING) is not _MISSING


def _put(result: Translation, seed_key: str, ours: str, value: Any, source: str) -> None:
    if _has(result.data, ours):
        earlier = result.aliases.get(ours)
        if earlier is None:
            raise SeedKeyError(f"{source}: {seed_key} (the seed's layout) and {ours} set the same thing: keep one")
        if _get(result.data, ours, None) != value:
            raise SeedKeyError(f"{source}: {earlier} and {seed_key} both mean {ours} and differ: make them agree")
    *parents, leaf = ours.split(".")
    target = result.data
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value
    result.aliases[ours] = seed_key
    result.notices.append(f"{source}: {seed_key} is read as {ours}")


def translate(raw: dict[str, Any], source: str) -> Translation:
    """``raw`` (one file's keys) in our layout; ``source`` names the file in messages."""
    result = Translation(data=copy.deepcopy(raw))
    data = result.data
    for seed_key, ours in RENAMED.items():
        found, value = _pop(data, seed_key)
        if found:
            _put(result, seed_key, ours, value, source)
    _special_keys(result, source)
    for seed_key, why in EXPLAINED.items():
        found, value = _pop(data, seed_key)
        if found:
            if seed_key == "finetuning.fp16" and value:
                raise SeedKeyError(f"{source}: finetuning.fp16: true is not supported: use finetuning.bf16: true "
                                   "(GPUs since Ampere) or false (fp32)")
            result.notices.append(f"{source}: {seed_key} has no effect here: {why}")
    for section in [key for key, value in data.items() if value == {}]:
        del data[section]  # a section the seed filled only with keys moved elsewhere
    return result


def _special_keys(result: Translation, source: str) -> None:
    """Seed keys whose value changes shape on the way."""
    data = result.data
    found, ratio = _pop(data, "dataset_generator.train_ratio")
    if found:
        if not isinstance(ratio, int | float) or not 0 < ratio < 1:
            raise SeedKeyError(f"{source}: dataset_generator.train_ratio must be between 0 and 1, not {ratio!r}")
        rest = round((1 - ratio) / 2, 6)
        _put(result, "dataset_generator.train_ratio", "dataset_generator.split",
             {"train": ratio, "validation": rest, "test": round(1 - ratio - rest, 6)}, source)
    found, weights = _pop(data, "evaluation.combined_weights")
    if found:
        if not isinstance(weights, dict):
            raise SeedKeyError(f"{source}: evaluation.combined_weights must map metric names to weights")
        _put(result, "evaluation.combined_weights", "evaluation.weights",
             {WEIGHT_NAMES.get(name, name): weight for name, weight in weights.items()}, source)
    _same_as(result, source, "finetuning.train_data", "paths.qa_dataset", "data/qa_dataset", "train.json")
    _same_as(result, source, "evaluation.base_model", "finetuning.base_model", None, None)
    found, token = _pop(data, "serving.api_token")
    if found:
        if token:
            raise SeedKeyError(f"{source}: serving.api_token: a token written here ends up in every copy of the "
                               "file: set API_TOKEN in the environment or .env instead, and remove the key")
        result.notices.append(f"{source}: serving.api_token has no effect here: the gateway's token comes from "
                              "API_TOKEN (environment or .env), never from a file")
    found, host = _pop(data, "serving.vllm_host")
    if found:
        serving = data.get("serving", {})
        if "vllm_url" in serving:
            result.notices.append(f"{source}: serving.vllm_host has no effect here: serving.vllm_url is given")
        else:
            _put(result, "serving.vllm_host", "serving.vllm_url", f"http://{host}:{serving.get('vllm_port', 8001)}",
                 source)


def _same_as(result: Translation, source: str, seed_key: str, ours: str, default_folder: str | None,
             file: str | None) -> None:
    """A seed key that repeats another setting: explained when it agrees, an error naming both when not."""
    found, value = _pop(result.data, seed_key)
    if not found:
        return
    if file is not None:  # a file inside a folder we configure
        path = PurePosixPath(str(value))
        folder = _get(result.data, ours, default_folder)
        if path.name != file or str(path.parent) != str(PurePosixPath(str(folder))):
            raise SeedKeyError(f"{source}: {seed_key}: {value}: stage 3 writes {file} into {ours} ({folder}): "
                               f"set {ours}: {path.parent} instead")
    elif not _has(result.data, ours):  # the only place the file names the model
        _put(result, seed_key, ours, value, source)
        return
    elif value != _get(result.data, ours, None):
        raise SeedKeyError(f"{source}: {seed_key} ({value}) differs from {ours} ({_get(result.data, ours, None)}): "
                           f"the same model is evaluated and fine-tuned here: keep {ours}")
    result.notices.append(f"{source}: {seed_key} has no effect here: {ours} says the same")


def _get(data: dict, dotted: str, default: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return default
        data = data[part]
    return data

