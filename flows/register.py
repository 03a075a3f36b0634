"""Stage 5 — register: publish the selected adapter as the next version, with its model card.

Checks first that serving can load the adapter; publishes nothing when the same weights are
already registered (a nightly rerun with no new data mints no new version). The exports
(merged weights, GGUF, an Ollama Modelfile) are published with the adapter, each measured
against 4d (tasks/release/exports.py).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from core import artifacts
from core.config import ConfigError, PipelineConfig, Secrets
from core.files import atomic_write_json
from core.naming import next_version_name
from flows.report import say
from flows.threaded import threaded_flow
from tasks.finetune.comparison import metric_difference
from tasks.finetune.select import ADAPTER_FILES, adapter_hashes
from tasks.release.adapter_check import check_servable
from tasks.release.exports import build_exports, export_line
from tasks.release.model_card import build_model_card
from tasks.release.registry import HubRegistry, LocalRegistry, Registry, publish_version


def _owner(config: PipelineConfig) -> str:
    owner = config.registration.hf_username or Secrets().hf_username
    if not owner:
        raise ConfigError("registration.target: hub needs the repo owner: set registration.hf_username "
                          "or HF_USERNAME, or use registration.target: local")
    return owner


def make_registry(config: PipelineConfig) -> Registry:
    r = config.registration
    if r.target == "local":
        return LocalRegistry(config.path(config.paths.registry))
    token = Secrets().require("hf_token", "registration.target: hub", "use registration.target: local")
    return HubRegistry(_owner(config), token.get_secret_value(), r.hub_url, r.private)


def preflight(config: PipelineConfig) -> None:
    make_registry(config)  # names the missing owner or token before any work


class PromotionRefused(Exception):
    """The adapter did not clear ``registration.require_improvement``; nothing was published."""


def promotion_check(rule: str, summary: dict) -> str | None:
    """Why ``rule`` refuses this result (the numbers, and what to change), or None when it passes."""
    combined = metric_difference(summary)
    measured = f"{summary['headline']} (measured on {summary['split']}.json)"
    if rule == "ci" and combined.verdict != "better":
        return (f"registration.require_improvement: ci needs the whole interval of the combined score's change above "
                f"0. {measured}. Nothing registered: more test questions narrow the interval (more documents, "
                "or a larger dataset_generator.split.test); require_improvement: mean or none registers anyway")
    if rule == "mean" and combined.delta <= 0:
        return (f"registration.require_improvement: mean needs the combined score's mean change above 0. "
                f"{measured}. Nothing registered (require_improvement: none registers anyway)")
    return None


def _sources(config: PipelineConfig, used: list[str]) -> list[dict]:
    entries = artifacts.load_if_present(config, "metadata", [])
    by_sha = {e["sha256"]: e for e in entries if e.get("status") == "ok" and e.get("sha256")}
    return [by_sha[sha] for sha in used if sha in by_sha]


def _card(config: PipelineConfig, name: str, weights_sha: str, summary: dict, selection: dict, stats: dict,
          exports: dict[str, dict]) -> str:
    f = config.finetuning
    training = {"r": f.lora.r, "alpha": f.lora.alpha, "dropout": f.lora.dropout,
                "target_modules": ", ".join(f.lora.target_modules), "quantization": f.quantization,
                **{k: v for k, v in f.training.model_dump().items() if v is not None}}
    return str(build_model_card(
        name=name, domain=config.domain, use_case=config.use_case, method=f.method,
        base_model=f"{f.base_model} (converted from {f.base_model_gguf})" if f.base_model_gguf else f.base_model,
        base_is_hub_id=not config.path(Path(f.base_model)).exists(), license=config.registration.license,
        adapter_sha256=weights_sha, summary=summary, selection=selection, training=training,
        dataset_stats=stats, sources=_sources(config, stats.get("source_documents", [])), exports=exports))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@threaded_flow("register")
def register(config: PipelineConfig) -> dict:
    adapter, r = config.path(config.paths.lora_weights), config.registration
    check_servable(adapter, config.serving.max_lora_rank)
    weights_sha = adapter_hashes(adapter)["adapter_model.safetensors"]  # complete: check_servable said so
    selection, summary, stats = (artifacts.load(config, name, "5") for name in ("checkpoint_selection", "comparison", "stats"))
    registry, stem = make_registry(config), config.adapter_stem()
    published = registry.published(f"{stem}-")
    if same := sorted(name for name, sha in published.items() if sha == weights_sha):
        record = {"status": "unchanged", "name": same[-1], "target": r.target, "location": registry.location(same[-1]),
                  "adapter_sha256": weights_sha, "checked_at": _now()}
        atomic_write_json(artifacts.path(config, "registration"), record)
        say(f"5 register: these weights are already registered as {same[-1]}: no new version")
        return record
    if refusal := promotion_check(r.require_improvement, summary):
        raise PromotionRefused(refusal)
    name = next_version_name(list(published), stem, r.version_bump)
    staging = config.path(config.paths.exports) / weights_sha[:16]  # kept until published: a rerun resumes
    exports = (build_exports(config, name, adapter, staging, artifacts.load(config, "eval_finetuned", "5"))
               if r.exports.wanted() else {})
    for export, outcome in exports.items():
        say(f"5 export {export_line(export, outcome)}")
    where = publish_version(registry, name, adapter, ADAPTER_FILES,
                            _card(config, name, weights_sha, summary, selection, stats, exports),
                            f"{name}: {summary['headline']}", staging if staging.is_dir() else None)
    shutil.rmtree(staging, ignore_errors=True)
    record = {"status": "registered", "name": name, "target": r.target, "location": where,
              "adapter_sha256": weights_sha, "previous_versions": sorted(published),
              "metrics": {side: {metric: m[key] for metric, m in summary["metrics"].items()}
                          for side, key in (("baseline", "before"), ("fine_tuned", "after"))},
              "promotion": {"rule": r.require_improvement, "headline": summary["headline"]}, "exports": exports,
              "registered_at": _now()}
    atomic_write_json(artifacts.path(config, "registration"), record)
    say(f"5 register: {name} → {where}")
    return record
