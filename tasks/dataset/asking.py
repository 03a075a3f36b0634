"""Stage 3's calls to the provider as Prefect tasks (each a state in the run's UI): the pairs of every group, then the
judge's verdicts. Failed groups fail the task with the counts; what finished is cached, so a retry asks only the rest."""

from __future__ import annotations

import asyncio
from collections import Counter

from prefect import task
from prefect.cache_policies import NO_CACHE

from core import artifacts
from core.config import PipelineConfig
from tasks.dataset.generate import Group, GroupResult, cost_usd, generate_all, judge_one
from tasks.dataset.pairs import QARecord
from tasks.llm.calls import RateLimitedCaller, remedy


class StageIncomplete(Exception):
    """Some work failed on transient errors; everything finished is kept, and a rerun does only the rest."""


@task(name="generate-qa-groups", cache_policy=NO_CACHE)
async def generate_groups(groups: list[Group], caller: RateLimitedCaller, config: PipelineConfig,
                          on_result=None) -> list[GroupResult]:
    """Every group's pairs; ends Failed, with the counts, when some groups failed on transient provider errors
    (those that finished are cached, so a retry asks only for the rest)."""
    g = config.dataset_generator
    results = await generate_all(groups, caller, artifacts.llm_cache(config, "groups"), config.domain,
                                 g.questions_per_group, g.min_answer_overlap, on_result)
    if failed := [r for r in results if r.status == "failed"]:
        raise StageIncomplete(
            f"{len(failed)} of {len(groups)} groups failed on transient provider errors (last: {failed[-1].error}); "
            f"{len(groups) - len(failed)} finished: {remedy(caller.last_failure, g, caller.slots.lowest)}")
    return results


@task(name="judge-qa-pairs", cache_policy=NO_CACHE)
async def judge_records(records: list[QARecord], sources: dict[str, str], caller: RateLimitedCaller,
                        config: PipelineConfig) -> list:
    cache_dir = artifacts.llm_cache(config, "judge")
    provider = caller.provider

    async def one(record: QARecord):
        path = artifacts.cache_entry(cache_dir, artifacts.llm_cache_key("judge", provider.name, provider.model, record.id))
        return await judge_one(sources[record.id], record.question, record.answer, caller, path)

    return list(await asyncio.gather(*(one(r) for r in records)))


async def preview_run(config: PipelineConfig, groups: list[Group], caller: RateLimitedCaller) -> tuple[dict, list[str]]:
    """``--preview``: the first groups asked, a few of their pairs shown and the full run's cost estimated from
    them; nothing is written to the dataset (the answers are cached, so the full run does not pay for them twice)."""
    sample = groups[: config.dataset_generator.preview_groups]
    results = await generate_groups(sample, caller, config)
    pairs = [(group, pair) for group, result in zip(sample, results, strict=True) for pair in result.pairs]
    lines = [f"[{pair.type}] Q: {pair.question}\n        A: {pair.answer}\n        (from {group.url or group.doc_sha256[:12]})"
             for group, pair in pairs[:6]]
    scale = len(groups) / max(1, len(sample))
    tokens_in = int(sum(r.input_tokens for r in results) * scale)
    tokens_out = int(sum(r.output_tokens for r in results) * scale)
    estimate = cost_usd(config.dataset_generator, tokens_in, tokens_out)
    lines.append(f"preview: {len(sample)} of {len(groups)} groups, {len(pairs)} pairs, "
                 f"dropped {dict(sum((Counter(r.dropped) for r in results), Counter()))}; "
                 f"full run estimate: ~{tokens_in} input + {tokens_out} output tokens, ~${estimate:.4f} "
                 f"({config.dataset_generator.provider}/{caller.provider.model}); nothing written to the dataset")
    return {"preview_groups": len(sample), "pairs": len(pairs), "estimated_cost_usd": estimate}, lines
