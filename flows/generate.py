"""Stage 3 — generate: chunks → QA pairs (LLM) → deduplicated, optionally judged, split dataset."""

from __future__ import annotations

from collections import Counter

from prefect import flow
from prefect.artifacts import acreate_table_artifact

from core import artifacts
from core.config import PipelineConfig
from core.files import atomic_write_json
from core.stages import artifact_key
from tasks.common.records import Chunk
from tasks.dataset.asking import generate_groups, judge_records
from tasks.dataset.contamination import contamination_line
from tasks.dataset.finish import split_and_write
from tasks.dataset.generate import (
    Group,
    GroupResult,
    cache_key,
    cost_usd,
    group_chunks,
)
from tasks.dataset.pairs import deduplicate, keep_judged, records_from
from tasks.dataset.split import SIDES
from tasks.dataset.stats import GenerationRun, dataset_stats, shares_off
from tasks.llm.calls import CallPolicy, RateLimitedCaller
from tasks.llm.providers import make_provider
from tasks.report.console import progress_bar, say, table_rows


def preflight(config: PipelineConfig) -> None:
    if config.dataset_generator.provider == "gemini":
        make_provider(config.dataset_generator)


def load_chunks(config: PipelineConfig) -> list[Chunk]:
    return [Chunk.model_validate(c) for c in artifacts.load(config, "chunks", "3")]


async def _preview(config: PipelineConfig, groups: list[Group], caller: RateLimitedCaller) -> dict:
    sample = groups[: config.dataset_generator.preview_groups]
    results = await generate_groups(sample, caller, config)
    pairs = [(group, pair) for group, result in zip(sample, results, strict=True) for pair in result.pairs]
    for group, pair in pairs[:6]:
        say(f"[{pair.type}] Q: {pair.question}\n        A: {pair.answer}\n        (from {group.url or group.doc_sha256[:12]})")
    tokens_in = sum(r.input_tokens for r in results)
    tokens_out = sum(r.output_tokens for r in results)
    scale = len(groups) / max(1, len(sample))
    estimate = cost_usd(config.dataset_generator, int(tokens_in * scale), int(tokens_out * scale))
    say(f"preview: {len(sample)} of {len(groups)} groups, {len(pairs)} pairs, "
        f"dropped {dict(sum((Counter(r.dropped) for r in results), Counter()))}; "
        f"full run estimate: ~{int(tokens_in * scale)} input + {int(tokens_out * scale)} output tokens, "
        f"~${estimate:.4f} ({config.dataset_generator.provider}/{caller.provider.model}); nothing written to the dataset")
    return {"preview_groups": len(sample), "pairs": len(pairs), "estimated_cost_usd": estimate}


async def _ask(config: PipelineConfig, groups: list[Group], caller: RateLimitedCaller) -> tuple[list[GroupResult], int]:
    """Every group's result, with a bar over those not cached yet; and how many were cached before."""
    provider, cache_dir = caller.provider, artifacts.llm_cache(config, "groups")
    cached = sum(artifacts.cache_entry(cache_dir, cache_key(gr, provider.name, provider.model)).exists() for gr in groups)
    with progress_bar("generate: asking the LLM", len(groups) - cached) as advance:
        return await generate_groups(groups, caller, config, on_result=lambda _: advance()), cached


@flow(name="generate")
async def generate(config: PipelineConfig, preview: bool = False) -> dict:
    g = config.dataset_generator
    chunks = load_chunks(config)
    groups = group_chunks(chunks, g.max_tokens)
    provider = make_provider(config.dataset_generator)
    caller = RateLimitedCaller(provider, CallPolicy.of(g, config.orchestration.llm_rate_limit))
    try:
        if preview:
            return await _preview(config, groups, caller)
        results, cached = await _ask(config, groups, caller)
        records, sources, rejected = records_from(groups, results)
        records, n_exact, n_near = deduplicate(records, g.near_duplicate_threshold)
        judged = (0, 0)
        if g.judge:
            records, judged = keep_judged(records, await judge_records(records, sources, caller, config), g.judge_threshold)
        split, level, review, contamination = split_and_write(config, records, chunks)
        if level.warning:
            say(f"generate: warning: {level.warning}")
        run = GenerationRun(provider.name, provider.model, [c.doc_sha256 for c in chunks], len(groups), cached,
                            caller.calls, results, rejected, exact_duplicates=n_exact, near_duplicates=n_near,
                            judge_rejected=judged[0], judge_failed=judged[1])
        stats = dataset_stats(g, run, split, level, review, contamination)
        atomic_write_json(artifacts.path(config, "stats"), stats)
        shares = stats["split"]["shares"]
        say(f"generate: {len(groups)} groups ({cached} cached, {caller.calls} provider calls), "
            f"{stats['pairs_generated']} pairs generated, {n_exact + n_near} duplicates, "
            f"{sum(stats['dropped_by_reason'].values())} dropped, "
            + " / ".join(f"{len(split[s])} {s} ({shares[s]:.0%})" for s in SIDES)
            + f" ({stats['split']['level']}-level split)"
            + (f", {review['excluded_pairs']} left out by review" if review["excluded_pairs"] else ""))
        say(f"generate: contamination: {contamination_line(contamination)}")
        if off := shares_off(shares, g.split.model_dump()):
            say(f"generate: warning: {'; '.join(off)}: whole documents cannot come closer (a side's documents never "
                "move once placed; more, or smaller, documents even it out)")
        await acreate_table_artifact(key=artifact_key("3"), description="Stage 3 dataset statistics",
                                     table=table_rows({k: v for k, v in stats.items() if k != "source_documents"}))
        return stats
    finally:
        await provider.aclose()
