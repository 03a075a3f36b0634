"""Stage 5 — register: publish the selected adapter as the next version, with its model card.

Checks first that serving can load the adapter; publishes nothing when the same weights are
already registered (a nightly rerun with no new data mints no new version). The exports
(merged weights, GGUF, an Ollama Modelfile) are published with the adapter, each measured
against 4d (tasks/release/exports.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from core import artifacts, results
from core.config import PipelineConfig
from core.naming import next_version_name
from core.results import CheckpointSelection, Comparison, EvaluationReport, Registration
from flows.threaded import threaded_flow
from tasks.finetune.select import ADAPTER_FILES, adapter_hashes
from tasks.release.adapter_check import check_servable
from tasks.release.exports import build_exports, export_line
from tasks.release.model_card import version_card, version_lineage
from tasks.release.promotion import PromotionRefused, promotion_check
from tasks.release.registry import make_registry, publish_version
from tasks.report.console import say


def preflight(config: PipelineConfig) -> None:
    make_registry(config)  # names the missing owner or token before any work


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@threaded_flow("register")
def register(config: PipelineConfig) -> dict:
    adapter, r = config.path(config.paths.lora_weights), config.registration
    check_servable(adapter, config.serving.max_lora_rank)
    weights_sha = adapter_hashes(adapter)["adapter_model.safetensors"]  # complete: check_servable said so
    selection = results.read(config, CheckpointSelection, "5").model_dump(mode="json")
    summary, stats = results.read(config, Comparison, "5").model_dump(mode="json"), artifacts.load(config, "stats", "5")
    registry, stem = make_registry(config), config.adapter_stem()
    published = registry.published(f"{stem}-")
    if same := sorted(name for name, sha in published.items() if sha == weights_sha):
        record = Registration(status="unchanged", name=same[-1], target=r.target, location=registry.location(same[-1]),
                              adapter_sha256=weights_sha, checked_at=_now())
        results.write(config, record)
        say(f"5 register: these weights are already registered as {same[-1]}: no new version")
        return results.dump(record)
    if refusal := promotion_check(r.require_improvement, summary):
        raise PromotionRefused(refusal)
    name = next_version_name(list(published), stem, r.version_bump)
    staging = config.path(config.paths.exports) / weights_sha[:16]  # kept until published: a rerun resumes
    exports = (build_exports(config, name, adapter, staging, results.read(config, EvaluationReport, "5", "eval_finetuned"))
               if r.exports.wanted() else {})
    for export, outcome in exports.items():
        say(f"5 export {export_line(export, outcome)}")
    lineage = version_lineage(config, list(published))
    where = publish_version(registry, name, adapter, ADAPTER_FILES,
                            version_card(config, name, weights_sha, summary, selection, stats, exports, lineage),
                            f"{name}: {summary['headline']}", staging if staging.is_dir() else None)
    record = Registration(status="registered", name=name, target=r.target, location=where, adapter_sha256=weights_sha,
                          previous_versions=sorted(published),
                          metrics={side: {metric: m[key] for metric, m in summary["metrics"].items()}
                                   for side, key in (("baseline", "before"), ("fine_tuned", "after"))},
                          promotion={"rule": r.require_improvement, "headline": summary["headline"]}, exports=exports,
                          lineage=lineage,
                          registered_at=_now())
    results.write(config, record)
    say(f"5 register: {name} → {where}")
    return results.dump(record)
