"""Evaluate a model (base, or base + adapter) on the eval set: one complete report.

An evaluation is a pure function of the weights, the questions, the settings and the scoring
code, so its result is cached by Prefect under a key made of their content hashes (persisted
in the configured result storage). A rerun, a flow-run retry or the GPU worker asking for an
evaluation that was already done anywhere that shares the storage gets it back without
generating a token.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy

from core import artifacts
from core.config import ConfigError, PipelineConfig
from core.prompts import system_prompt
from core.results import EvaluationReport
from tasks.common.base_models import model_ref, prepare_base_model
from tasks.common.cache_keys import content_key, source_hash
from tasks.common.review import Review, apply_review, load_review


def folder_hash(folder: Path, pattern: str = "*.safetensors") -> str:
    """Content hash of a model or adapter folder's weights and configs (names included)."""
    files = sorted([*folder.glob(pattern), *folder.glob("*config.json")])
    return _hash_files(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=32)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    """Hashing a base model's weights takes a second; the same files (size, mtime) are hashed once per process."""
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).name.encode())
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def evaluation_key(_context: Any, parameters: dict[str, Any]) -> str:
    """Content of everything the report depends on: weights, questions, settings, generation and scoring code."""
    base, adapter = parameters["base"], parameters["adapter"]
    return content_key("evaluation", {
        "base": folder_hash(Path(base)) if Path(base).is_dir() else base,
        "adapter": folder_hash(Path(adapter)) if adapter else None,
        "code": source_hash("tasks.finetune.evaluate", "core.inference", "tasks.common.metrics"),
        **{name: value for name, value in parameters.items() if name not in ("base", "adapter")},
    })


def load_questions(path: Path, limit: int | None = None, seed: int = 0, review: Review | None = None) -> list[dict]:
    """A side's questions, less those ``review`` leaves out (its corrected answers in); with ``limit``, a seeded sample
    of that many in file order (the first ones would all come from the first documents)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (run stage 3 first)")
    records = apply_review(json.loads(path.read_text(encoding="utf-8")), review or Review())[0]
    if not records:
        raise ValueError(f"{path} has no questions")
    return sample_questions(records, limit, seed)


def sample_questions(records: list[dict], limit: int | None, seed: int) -> list[dict]:
    if limit is None or len(records) <= limit:
        return records
    return [records[i] for i in sorted(random.Random(seed).sample(range(len(records)), limit))]


@task(name="evaluate-model", cache_policy=CacheKeyFnPolicy(cache_key_fn=evaluation_key), persist_result=True)
def evaluate_model(base: str, adapter: Path | None, eval_records: list[dict], system: str, max_new_tokens: int,
                   batch_size: int, bertscore_model: str, bertscore_layers: int | None,
                   weights: dict[str, float]) -> dict:
    """Generate greedy answers for every eval question and score them."""
    from core.inference import generate_answers, load_model  # torch and the metrics: only when not cached
    from tasks.common.metrics import score_all

    started = time.perf_counter()
    model, tokenizer = load_model(base, adapter)
    loaded = time.perf_counter()
    predictions = generate_answers(model, tokenizer, [r["question"] for r in eval_records], system, max_new_tokens,
                                   batch_size)
    generated = time.perf_counter()
    references = [r["answer"] for r in eval_records]
    per_example, aggregate = score_all(predictions, references, bertscore_model, bertscore_layers, weights)
    report = {
        "model": base, "adapter": str(adapter) if adapter else None,
        "model_hash": folder_hash(Path(base)) if Path(base).is_dir() else None,
        "adapter_hash": folder_hash(adapter) if adapter else None,
        "examples": len(eval_records), "metrics": aggregate, "weights": weights,
        "settings": {"max_new_tokens": max_new_tokens, "batch_size": batch_size,
                     "bertscore_model": bertscore_model, "system_prompt": system, "decoding": "greedy"},
        "timings_s": {"load": round(loaded - started, 2), "generate": round(generated - loaded, 2),
                      "score": round(time.perf_counter() - generated, 2)},
        "predictions": [{"id": r["id"], "question": r["question"], "reference": r["answer"], "prediction": p, "scores": s}
                        for r, p, s in zip(eval_records, predictions, per_example, strict=True)],
    }
    return report


def base_model(config: PipelineConfig) -> str:
    """What stage 4 loads as the base model (converted once from its GGUF when the config ships one)."""
    f = config.finetuning
    return prepare_base_model(f.base_model, f.base_model_gguf, config.path(config.paths.base_model))


def eval_settings(config: PipelineConfig) -> dict:
    """evaluate_model's settings from the config: the same for 4a, 4c and 4d, and part of every cache key."""
    e = config.evaluation
    return {"system": system_prompt(config.domain), "max_new_tokens": e.max_new_tokens, "batch_size": e.batch_size,
            "bertscore_model": model_ref(e.bertscore_model, "evaluation.bertscore_model"),
            "bertscore_layers": e.bertscore_num_layers, "weights": dict(e.weights)}


def stage_questions(config: PipelineConfig, side: str, limit: int | None = None) -> list[dict]:
    """Stage 3's questions of one side: "validation" (4c chooses on a seeded sample) or "test" (4a and 4d report on all),
    the review's verdicts applied (a pair left out or corrected since stage 3 ran counts already)."""
    try:
        return load_questions(artifacts.path(config, side), limit, config.evaluation.seed,
                              load_review(artifacts.review_file(config)))
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"stage 4 has no {side} questions: {error} (with few source documents a side can get "
                          f"none: add documents, or give dataset_generator.split.{side} a larger share)") from None


def evaluate_side(config: PipelineConfig, base: str, adapter: Path | None, records: list[dict],
                  side: str) -> tuple[EvaluationReport, bool]:
    """The report, and whether it came from the cache (evaluations are cached by content: evaluation_key).

    The report names this call's paths and the side its questions come from: a cached one may have been made
    for a copy elsewhere.
    """
    evaluate = evaluate_model.with_options(result_storage=config.result_storage())
    state = evaluate(base, adapter, records, **eval_settings(config), return_state=True)
    report = state.result(_sync=True)  # see flows.threaded
    report = {**report, "model": base, "adapter": str(adapter) if adapter else None, "split": side}
    return EvaluationReport.model_validate(report), state.name == "Cached"
