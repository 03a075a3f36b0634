"""Benchmark: stage 3 LLM calls against a loopback Gemini with latency and a requests/min limit.

    .venv/bin/python -m bench.generation [--groups 40] [--latency-ms 200] [--rpm 120]

Reports the achieved request rate as a ratio of the limit (goal >= 0.9), groups lost (goal
0), provider calls on a rerun (goal 0), and the wall-time ratio to a sequential loop with
no limiter, measured with and without the rate limit.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pydantic import SecretStr

from core.config import DatasetGenerator
from core.prompts import GENERATION_SYSTEM, generation_prompt
from harness.llm import fake_llm
from harness.project import REPO
from tasks.common.records import Chunk
from tasks.dataset.generate import QAResponse, generate_all, group_chunks
from tasks.llm.calls import CallPolicy, RateLimitedCaller
from tasks.llm.offline import extractive_pairs
from tasks.llm.providers import GeminiProvider

KEY = "bench-key"


def make_chunks(n: int) -> list[Chunk]:
    text = (REPO / "sample_corpus" / "02-nutrition.md").read_text().split("\n# ", 1)[1]
    paragraphs = [p for p in text.split("\n\n") if len(p.split()) > 25 and extractive_pairs(p, 1)]
    return [Chunk(id=f"c{i}", doc_sha256=f"{i:064d}", url=None, section_path=["S"],
                  text=f"{paragraphs[i % len(paragraphs)]} (Part {i}.)", tokens=120) for i in range(n)]


async def timed_run(url: str, groups, cache: Path, policy: CallPolicy) -> tuple[float, list, int]:
    provider = GeminiProvider(SecretStr(KEY), "gemini-2.5-flash", url, timeout_s=10)
    caller = RateLimitedCaller(provider, policy)
    started = time.perf_counter()
    try:
        results = await generate_all(groups, caller, cache, "pregnancy", 3, 0.5)
    finally:
        await provider.aclose()
    return time.perf_counter() - started, results, caller.calls


async def sequential(url: str, groups) -> float:
    provider = GeminiProvider(SecretStr(KEY), "gemini-2.5-flash", url, timeout_s=10)
    started = time.perf_counter()
    try:
        for group in groups:
            await provider.complete(GENERATION_SYSTEM, generation_prompt("pregnancy", group.text, 3), QAResponse)
    finally:
        await provider.aclose()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--rpm", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    groups = group_chunks(make_chunks(args.groups), max_tokens=600)

    with fake_llm("gemini", KEY, latency_s=args.latency_ms / 1000) as server, tempfile.TemporaryDirectory() as tmp:
        limited = CallPolicy.of(DatasetGenerator(max_concurrent_requests=args.concurrency, requests_per_minute=args.rpm))
        unlimited = replace(limited, requests_per_minute=60_000)
        wall, results, calls = asyncio.run(timed_run(server.url, groups, Path(tmp) / "a", limited))
        rerun_wall, _, rerun_calls = asyncio.run(timed_run(server.url, groups, Path(tmp) / "a", limited))
        free_wall, _, _ = asyncio.run(timed_run(server.url, groups, Path(tmp) / "b", unlimited))
        seq_wall = asyncio.run(sequential(server.url, groups))

    lost = sum(r.status == "failed" for r in results)
    dropped = sum(r.status == "dropped" for r in results)
    # n requests spaced 60/rpm apart span (n-1) intervals; the last one then takes one latency
    achieved_rpm = (calls - 1) / max(1e-9, wall - args.latency_ms / 1000) * 60
    print(f"generation: {len(groups)} groups, {args.latency_ms:.0f} ms latency, limit {args.rpm} requests/min, "
          f"concurrency {args.concurrency}")
    print(f"  with the limit:     {wall:6.2f} s, {calls} calls, achieved {achieved_rpm:6.1f} requests/min "
          f"= {achieved_rpm / args.rpm:.2f} of the limit")
    print(f"  lost groups: {lost}; dropped for unusable replies: {dropped}; "
          f"rerun: {rerun_calls} provider calls in {rerun_wall:.2f} s")
    print(f"  sequential loop (no limiter, would send {60 / (args.latency_ms / 1000):.0f}/min): {seq_wall:6.2f} s")
    print(f"  ours without a limit: {free_wall:6.2f} s = {seq_wall / free_wall:.1f}x faster than sequential")
    print(f"  ours with the limit vs sequential: {seq_wall / wall:.2f}x (the limit, not concurrency, is the bound)")


if __name__ == "__main__":
    main()
