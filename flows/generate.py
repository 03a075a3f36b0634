"""Stage 3 — generate: chunks → QA pairs (LLM) → deduplicated, optionally judged, split dataset."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from prefect import flow, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from core import artifacts
from core.config import PipelineConfig, Secrets
from core.files import atomic_write_json, atomic_writer
from core.prompts import PROMPT_VERSION
from flows.report import progress_bar, say
from tasks.dataset import SIDES, QARecord, chat_view, deduplicate, record_id, split_records
from tasks.generate import (
    CallPolicy,
    Group,
    GroupResult,
    RateLimitedCaller,
    cache_key,
    generate_all,
    group_chunks,
    judge_one,
)
from tasks.llm import GeminiProvider, LLMProvider, OfflineProvider, OpenAICompatibleProvider
from tasks.questions import problem
from tasks.records import Chunk


class StageIncomplete(Exception):
    """Some work failed on transient errors; everything finished is kept, and a rerun does only the rest."""


def make_provider(config: PipelineConfig) -> LLMProvider:
    g = config.dataset_generator
    if g.provider == "offline":
        return OfflineProvider()
    if g.provider == "gemini":
        key = Secrets().require("gemini_api_key", "dataset_generator.provider: gemini",
                                "use provider: openai (a local OpenAI-compatible server) or provider: offline")
        return GeminiProvider(key, g.model, g.base_url, g.request_timeout_s, g.temperature)
    return OpenAICompatibleProvider(g.base_url, g.model, Secrets().openai_api_key, g.request_timeout_s, g.temperature)


def preflight(config: PipelineConfig) -> None:
    if config.dataset_generator.provider == "gemini":
        make_provider(config)


@task(name="generate-qa-groups", cache_policy=NO_CACHE)
async def generate_groups(groups: list[Group], caller: RateLimitedCaller, config: PipelineConfig,
                          on_result=None) -> list[GroupResult]:
    g = config.dataset_generator
    return await generate_all(groups, caller, config.path(config.paths.qa_dataset) / "cache", config.domain,
                              g.questions_per_group, g.min_answer_overlap, on_result)


@task(name="judge-qa-pairs", cache_policy=NO_CACHE)
async def judge_records(records: list[QARecord], sources: dict[str, str], caller: RateLimitedCaller,
                        config: PipelineConfig) -> list:
    cache_dir = config.path(config.paths.qa_dataset) / "cache" / "judge"
    provider = caller.provider

    async def one(record: QARecord):
        path = cache_dir / f"{record.id}-{provider.name}-{provider.model.replace('/', '_')}-{PROMPT_VERSION}.json"
        return await judge_one(sources[record.id], record.question, record.answer, caller, path)

    return list(await asyncio.gather(*(one(r) for r in records)))


def _cost(config: PipelineConfig, input_tokens: int, output_tokens: int) -> float:
    g = config.dataset_generator
    if g.provider == "offline":
        return 0.0
    return round(input_tokens / 1e6 * g.input_price_per_mtok + output_tokens / 1e6 * g.output_price_per_mtok, 6)


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
    estimate = _cost(config, int(tokens_in * scale), int(tokens_out * scale))
    say(f"preview: {len(sample)} of {len(groups)} groups, {len(pairs)} pairs, "
        f"dropped {dict(sum((Counter(r.dropped) for r in results), Counter()))}; "
        f"full run estimate: ~{int(tokens_in * scale)} input + {int(tokens_out * scale)} output tokens, "
        f"~${estimate:.4f} ({config.dataset_generator.provider}/{caller.provider.model}); nothing written to the dataset")
    return {"preview_groups": len(sample), "pairs": len(pairs), "estimated_cost_usd": estimate}


@flow(name="generate")
async def generate(config: PipelineConfig, preview: bool = False) -> dict:
    g = config.dataset_generator
    out_dir = config.path(config.paths.qa_dataset)
    chunks = load_chunks(config)
    groups = group_chunks(chunks, g.max_tokens)
    provider = make_provider(config)
    caller = RateLimitedCaller(provider, CallPolicy.of(config.dataset_generator, config.orchestration.llm_rate_limit))
    try:
        if preview:
            return await _preview(config, groups, caller)
        cache_dir = out_dir / "cache"
        cached = sum((cache_dir / f"{cache_key(gr, provider.name, provider.model)}.json").exists() for gr in groups)
        with progress_bar("generate: asking the LLM", len(groups) - cached) as advance:
            results = await generate_groups(groups, caller, config, on_result=lambda _: advance())
        failed = [r for r in results if r.status == "failed"]
        if failed:
            raise StageIncomplete(
                f"{len(failed)} of {len(groups)} groups failed on transient provider errors (last: {failed[-1].error}); "
                f"{len(groups) - len(failed)} finished groups are cached: rerun to retry only the failed ones")

        records: list[QARecord] = []
        sources: dict[str, str] = {}
        rejected: Counter[str] = Counter()  # checked here, not when cached: a stricter rule needs no new calls
        for group, result in zip(groups, results, strict=True):
            for pair in result.pairs:
                if reason := problem(pair.question, pair.answer):
                    rejected[reason] += 1
                    continue
                record = QARecord(id=record_id(group.doc_sha256, pair.question, pair.answer), question=pair.question,
                                  answer=pair.answer, type=pair.type, chunk_ids=list(group.chunk_ids),
                                  doc_sha256=group.doc_sha256, url=group.url, provider=result.provider,
                                  model=result.model, prompt_version=result.prompt_version)
                records.append(record)
                sources[record.id] = group.text
        generated = len(records) + sum(rejected.values())
        records, n_exact, n_near = deduplicate(records, g.near_duplicate_threshold)

        judged_out = judge_failed = 0
        if g.judge:
            scores = await judge_records(records, sources, caller, config)
            kept = []
            for record, score in zip(records, scores, strict=True):
                if score is None:
                    judge_failed += 1
                    continue
                record.judge = score.model_dump()
                if min(score.faithfulness, score.usefulness) >= g.judge_threshold:
                    kept.append(record)
                else:
                    judged_out += 1
            records = kept

        previous = artifacts.load_if_present(config, "split", {})
        split, sides = split_records(records, g.split.model_dump(), g.seed, previous)
        level = split_level(sides)
        if level != "document":
            say(f"generate: warning: {level}")
        _write_dataset(config, split)
        atomic_write_json(artifacts.path(config, "split"), {**previous, **sides})

        dropped = sum((Counter(r.dropped) for r in results), rejected)
        tokens_in = sum(r.input_tokens for r in results)
        tokens_out = sum(r.output_tokens for r in results)
        stats = {
            "provider": provider.name, "model": provider.model, "prompt_version": PROMPT_VERSION,
            "offline_extractive": provider.name == "offline",
            "chunks": len(chunks), "groups": len(groups), "groups_cached_before_run": cached,
            "groups_dropped": sum(r.status == "dropped" for r in results),
            "provider_calls_this_run": caller.calls,
            "pairs_generated": generated, "dropped_by_reason": dict(sorted(dropped.items())),
            "duplicates": {"exact": n_exact, "near": n_near},
            "judge": {"enabled": g.judge, "threshold": g.judge_threshold, "rejected": judged_out, "failed": judge_failed},
            "pairs": len(records),
            "by_type": dict(sorted(Counter(r.type for r in records).items())),
            "split": {"level": "document" if level == "document" else "chunk", "ratios": g.split.model_dump(),
                      "seed": g.seed, **{f"{side}_pairs": len(split[side]) for side in SIDES},
                      **{f"{side}_documents": len({r.doc_sha256 for r in split[side]}) for side in SIDES}},
            "usage": {provider.name: {"input_tokens": tokens_in, "output_tokens": tokens_out,
                                      "estimated_cost_usd": _cost(config, tokens_in, tokens_out)}},
            "source_documents": sorted({c.doc_sha256 for c in chunks}),
        }
        atomic_write_json(artifacts.path(config, "stats"), stats)
        say(f"generate: {len(groups)} groups ({cached} cached, {caller.calls} provider calls), {generated} pairs generated, "
            f"{n_exact + n_near} duplicates, {sum(dropped.values())} dropped, "
            + " / ".join(f"{len(split[side])} {side}" for side in SIDES)
            + f" ({stats['split']['level']}-level split)")
        await acreate_table_artifact(key="generate-summary", table=[
            {"metric": key, "value": json.dumps(value) if isinstance(value, dict | list) else value}
            for key, value in stats.items() if key != "source_documents"], description="Stage 3 dataset statistics")
        return stats
    finally:
        await provider.aclose()


def split_level(sides: dict[str, str]) -> str:
    """"document" when every document is whole on one side, else the warning saying which questions share one."""
    values = set(sides.values())
    if "chunks" in values:
        return ("a document is split by chunk (it was the only source document when first split): its test and "
                "validation questions share a document with training questions")
    if "held-out" in values:
        return ("the only held-out document has its questions shared out between validation and test: the test "
                "questions share a document with those that chose the checkpoint (add source documents)")
    return "document"


def _write_dataset(config: PipelineConfig, split: dict[str, list[QARecord]]) -> None:
    """train/validation/test.json, and train_chat.jsonl (what 4b trains on); a two-way split's files are removed."""
    out_dir = config.path(config.paths.qa_dataset)
    for side, records in split.items():
        atomic_write_json(out_dir / f"{side}.json", [r.model_dump(mode="json") for r in records])
    with atomic_writer(artifacts.path(config, "train_chat"), "w") as handle:
        for record in split["train"]:
            handle.write(json.dumps(chat_view(record, config.domain), ensure_ascii=False) + "\n")
    for stale in ("eval.json", "eval_chat.jsonl"):
        (out_dir / stale).unlink(missing_ok=True)
