"""Evaluate a model (base, or base + adapter) on the eval set and write a complete report."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.files import atomic_write_json
from tasks.inference import generate_answers, load_model
from tasks.metrics import score_all


def folder_hash(folder: Path, pattern: str = "*.safetensors") -> str:
    """Content hash of a model or adapter folder's weights and configs (names included)."""
    digest = hashlib.sha256()
    for path in sorted([*folder.glob(pattern), *folder.glob("*config.json")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_eval_set(path: Path, limit: int | None = None) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (run stage 3 first)")
    records = json.loads(path.read_text(encoding="utf-8"))
    if not records:
        raise ValueError(f"{path} has no records: stage 3 produced no eval questions")
    return records[:limit] if limit else records


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(base: str, adapter: Path | None, eval_records: list[dict], system: str, max_new_tokens: int,
                   batch_size: int, bertscore_model: str, bertscore_layers: int | None, weights: dict[str, float],
                   report_path: Path | None = None, settings: dict | None = None) -> dict:
    """Generate greedy answers for every eval question, score them, and (optionally) write the report."""
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
        "settings": {**(settings or {}), "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                     "bertscore_model": bertscore_model, "system_prompt": system, "decoding": "greedy"},
        "timings_s": {"load": round(loaded - started, 2), "generate": round(generated - loaded, 2),
                      "score": round(time.perf_counter() - generated, 2)},
        "predictions": [{"id": r["id"], "question": r["question"], "reference": r["answer"], "prediction": p, "scores": s}
                        for r, p, s in zip(eval_records, predictions, per_example, strict=True)],
    }
    if report_path is not None:
        atomic_write_json(report_path, report)
    return report
