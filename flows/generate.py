"""Stage 3 — generate: chunks → QA pairs (LLM) → deduplicated, optionally judged, split dataset."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_table_artifact

from core import artifacts
from core.config import PipelineConfig
from core.stages import artifact_key
from tasks.common.records import Chunk
from tasks.dataset.asking import generate_groups, judge_records, preview_run
from tasks.dataset.finish import split_and_write
from tasks.dataset.generate import (
    Group,
    GroupResult,
    group_chunks,
    group_entry,
)
from tasks.dataset.pairs import deduplicate, keep_judged, records_from
from tasks.dataset.stats import GenerationRun, generated_said, write_stats
from tasks.llm.calls import CallPolicy, RateLimitedCaller
from tasks.llm.providers import make_provider
from tasks.report.console import progress_bar, say, table_rows


def preflight(config: PipelineConfig) -> None:
    if config.dataset_generator.provider == "gemini":
        make_provider(config.dataset_generator)


def load_chunks(config: PipelineConfig) -> list[Chunk]:
    return [Chunk.model_validate(c) for c in artifacts.load(config, "chunks", "3")]


async def _ask(config: PipelineConfig, groups: list[Group], caller: RateLimitedCaller) -> tuple[list[GroupResult], int]:
    """Every group's result, with a bar over those not cached yet; and how many were cached before."""
    provider, cache_dir = caller.provider, artifacts.llm_cache(config, "groups")
    cached = sum(group_entry(cache_dir, group, provider.name, provider.model).exists() for group in groups)
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
            summary, lines = await preview_run(config, groups, caller)
            for line in lines:
                say(line)
            return summary
        results, cached = await _ask(config, groups, caller)
        records, sources, rejected = records_from(groups, results)
        records, n_exact, n_near = deduplicate(records, g.near_duplicate_threshold)
        judged = (0, 0)
        if g.judge:
            records, judged = keep_judged(records, await judge_records(records, sources, caller, config), g.judge_threshold)
        split, level, review, contamination = split_and_write(config, records, chunks)
        run = GenerationRun(provider.name, provider.model, [c.doc_sha256 for c in chunks], len(groups), cached,
                            caller.calls, results, rejected, exact_duplicates=n_exact, near_duplicates=n_near,
                            judge_rejected=judged[0], judge_failed=judged[1])
        stats = write_stats(config, run, split, level, review, contamination)
        for line in generated_said(stats):
            say(line)
        await acreate_table_artifact(key=artifact_key("3"), description="Stage 3 dataset statistics",
                                     table=table_rows({k: v for k, v in stats.items() if k != "source_documents"}))
        return stats
    finally:
        await provider.aclose()
