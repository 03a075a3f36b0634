"""stats.json: what one run of stage 3 made and dropped, and what a reader of the scores should know about it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from core import artifacts
from core.config import DatasetGenerator, PipelineConfig
from core.files import atomic_write_json
from core.prompts import PROMPT_VERSION
from tasks.dataset.contamination import contamination_line
from tasks.dataset.generate import GroupResult, cost_usd
from tasks.dataset.pairs import QARecord
from tasks.dataset.split import SIDES, SplitLevel


@dataclass(frozen=True)
class GenerationRun:
    """What one run of stage 3 did, for stats.json."""

    provider: str
    model: str
    chunk_documents: list[str]  # the source document of every chunk
    groups: int
    cached: int  # groups whose result was cached before this run
    calls: int  # provider calls this run
    results: list[GroupResult]
    rejected: Counter[str]  # pairs dropped by the question rules, by reason
    exact_duplicates: int
    near_duplicates: int
    judge_rejected: int
    judge_failed: int


SHARE_TOLERANCE = 0.10  # a side's share of pairs this far from its ratio is worth a warning


def pair_shares(split: dict[str, list[QARecord]]) -> dict[str, float]:
    total = sum(len(records) for records in split.values()) or 1
    return {side: round(len(split[side]) / total, 4) for side in SIDES}


def shares_off(shares: dict[str, float], ratios: dict[str, float]) -> list[str]:
    """The sides whose share of pairs is more than ``SHARE_TOLERANCE`` from their ratio, as words."""
    return [f"{side} has {shares[side]:.0%} of the pairs for a ratio of {ratios[side]:.0%}" for side in SIDES
            if abs(shares[side] - ratios[side]) > SHARE_TOLERANCE + 1e-9]


def write_stats(config: PipelineConfig, run: GenerationRun, split: dict[str, list[QARecord]], level: SplitLevel,
                review: dict, contamination: dict) -> dict:
    """stats.json, written; returned for the stage's lines and artifact."""
    stats = dataset_stats(config.dataset_generator, run, split, level, review, contamination)
    atomic_write_json(artifacts.path(config, "stats"), stats)
    return stats


def dataset_stats(g: DatasetGenerator, run: GenerationRun, split: dict[str, list[QARecord]], level: SplitLevel,
                  review: dict, contamination: dict) -> dict:
    """stats.json: where the pairs came from, what was dropped and why, the split, what the review left out,
    the contamination check, the tokens and their cost."""
    results = run.results
    dropped = sum((Counter(r.dropped) for r in results), run.rejected)
    tokens_in, tokens_out = sum(r.input_tokens for r in results), sum(r.output_tokens for r in results)
    records = [r for side in SIDES for r in split[side]]
    return {
        "provider": run.provider, "model": run.model, "prompt_version": PROMPT_VERSION,
        "offline_extractive": run.provider == "offline",
        "chunks": len(run.chunk_documents), "groups": run.groups, "groups_cached_before_run": run.cached,
        "groups_dropped": sum(r.status == "dropped" for r in results),
        "provider_calls_this_run": run.calls,
        "pairs_generated": sum(len(r.pairs) for r in results),
        "dropped_by_reason": dict(sorted(dropped.items())),
        "unusable_replies": dict(sorted(sum((Counter(r.unusable_replies) for r in results), Counter()).items())),
        "duplicates": {"exact": run.exact_duplicates, "near": run.near_duplicates},
        "judge": {"enabled": g.judge, "threshold": g.judge_threshold, "rejected": run.judge_rejected,
                  "failed": run.judge_failed},
        "pairs": len(records),
        "by_type": dict(sorted(Counter(r.type for r in records).items())),
        "split": {"level": level.value, "ratios": g.split.model_dump(), "shares": pair_shares(split),
                  "seed": g.seed, **{f"{side}_pairs": len(split[side]) for side in SIDES},
                  **{f"{side}_documents": len({r.doc_sha256 for r in split[side]}) for side in SIDES}},
        "review": review, "contamination": contamination,
        "usage": {run.provider: {"input_tokens": tokens_in, "output_tokens": tokens_out,
                                 "estimated_cost_usd": cost_usd(g, tokens_in, tokens_out)}},
        "source_documents": sorted(set(run.chunk_documents)),
    }


def dataset_caveats(stats: dict) -> list[str]:
    """What a reader of the scores should know about the dataset they were measured on, from stats.json."""
    split = stats.get("split", {})
    caveats = [f"Contamination check (stage 3): {contamination_line(stats['contamination'])}."] \
        if "contamination" in stats else []
    if (review := stats.get("review")) and (review["excluded_pairs"] or review["corrected"]):
        documents = review["excluded_documents"]
        caveats.append(f"Review: {review['excluded_pairs']} pairs left out (with {documents} whole "
                       f"document{'' if documents == 1 else 's'}), {review['corrected']} answers corrected "
                       "(data/qa_dataset/review.json).")
    if warning := SplitLevel(split.get("level", "document")).warning:
        caveats.append(f"Split: {warning}.")
    if "shares" in split and (off := shares_off(split["shares"], split["ratios"])):
        caveats.append(f"Split: {'; '.join(off)} (whole documents could not come closer).")
    return caveats


def generated_said(stats: dict) -> list[str]:
    """Stage 3's lines, from stats.json: the split's warning, what was made and dropped, contamination, shares."""
    split, review = stats["split"], stats["review"]
    lines = [f"generate: warning: {warning}"] if (warning := SplitLevel(split["level"]).warning) else []
    lines.append(f"generate: {stats['groups']} groups ({stats['groups_cached_before_run']} cached, "
                 f"{stats['provider_calls_this_run']} provider calls), {stats['pairs_generated']} pairs generated, "
                 f"{sum(stats['duplicates'].values())} duplicates, {sum(stats['dropped_by_reason'].values())} dropped, "
                 + " / ".join(f"{split[f'{s}_pairs']} {s} ({split['shares'][s]:.0%})" for s in SIDES)
                 + f" ({split['level']}-level split)"
                 + (f", {review['excluded_pairs']} left out by review" if review["excluded_pairs"] else ""))
    lines.append(f"generate: contamination: {contamination_line(stats['contamination'])}")
    if off := shares_off(split["shares"], split["ratios"]):
        lines.append(f"generate: warning: {'; '.join(off)}: whole documents cannot come closer (a side's documents "
                     "never move once placed; more, or smaller, documents even it out)")
    return lines
