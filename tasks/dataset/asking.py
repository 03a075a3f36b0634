"""Stage 3's calls to the provider as Prefect tasks (each a state in the run's UI): the pairs of every group, then the
judge's verdicts. Failed groups fail the task with the counts; what finished is cached, so a retry asks only the rest."""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NO_CACHE

from core import artifacts
from core.config import PipelineConfig
from core.prompts import PROMPT_VERSION
from tasks.dataset.generate import Group, GroupResult, generate_all, judge_one
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
        key = f"{record.id}-{provider.name}-{provider.model.replace('/', '_')}-{PROMPT_VERSION}"
        path = artifacts.cache_entry(cache_dir, key)
        return await judge_one(sources[record.id], record.question, record.answer, caller, path)

    return list(await asyncio.gather(*(one(r) for r in records)))
