"""Benchmark: what the gateway adds on top of the backend it fronts.

    .venv/bin/python -m bench.gateway [--requests 2000] [--concurrency 64] [--backend-latency-ms 20]

Three processes on loopback: a fake vLLM (OpenAI chat API, fixed latency), the gateway in
front of it, and this one generating load. The same chat requests go once straight to the
backend and once through the gateway's /ask; we report added p50/p99 latency and the
throughput ratio at the given concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

import httpx

from tasks.prompts import system_prompt
from tests.servers import GatewayProcess, VLLMFaults, fake_vllm, free_port

BASE = "bench-base"


def serve_fake_vllm(port: int, latency_ms: float) -> None:
    with fake_vllm(BASE, VLLMFaults(latency_s=latency_ms / 1000), port=port):
        while True:
            time.sleep(3600)


async def load(url: str, body: dict, requests: int, concurrency: int) -> tuple[list[float], float, Counter]:
    latencies: list[float] = []
    failures: Counter = Counter()
    queue = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in queue:
            started = time.perf_counter()
            try:
                reply = await client.post(url, json=body)
                if reply.status_code != 200:
                    failures[f"{reply.status_code} {reply.text[:80]}"] += 1
            except httpx.HTTPError as error:
                failures[type(error).__name__] += 1
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await client.post(url, json=body)  # open a connection before timing
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, requests / elapsed, failures


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backend-latency-ms", type=float, default=20)
    parser.add_argument("--serve-fake-vllm", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake_vllm:
        serve_fake_vllm(args.serve_fake_vllm, args.backend_latency_ms)
        return

    port = free_port()
    backend = subprocess.Popen([sys.executable, "-m", "bench.gateway", "--serve-fake-vllm", str(port),
                                "--backend-latency-ms", str(args.backend_latency_ms)], env={**os.environ})
    try:
        vllm_url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{vllm_url}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        question = "What is the recommended daily folic acid intake in early pregnancy?"
        direct_body = {"model": BASE, "max_tokens": 64, "temperature": 0.0, "messages": [
            {"role": "system", "content": system_prompt("pregnancy")}, {"role": "user", "content": question}]}
        with tempfile.TemporaryDirectory() as logs, GatewayProcess({
                "GATEWAY_BACKEND": "vllm", "GATEWAY_VLLM_URL": vllm_url, "GATEWAY_BASE_MODEL": BASE,
                "GATEWAY_DOMAIN": "pregnancy", "GATEWAY_LOGS_DIR": logs, "GATEWAY_DEFAULT_MAX_TOKENS": "64"}) as gateway:
            gateway.wait_ready()
            direct = asyncio.run(load(f"{vllm_url}/v1/chat/completions", direct_body, args.requests, args.concurrency))
            through = asyncio.run(load(f"{gateway.url}/ask", {"question": question}, args.requests, args.concurrency))
    finally:
        backend.terminate()
        backend.wait(timeout=10)

    print(f"gateway overhead: {args.requests} requests, {args.concurrency} concurrent, "
          f"backend latency {args.backend_latency_ms:g} ms, load from a separate process")
    for label, (latencies, rps, failed) in (("backend directly", direct), ("through the gateway", through)):
        print(f"  {label:<20} p50 {percentile(latencies, 50):7.1f} ms  p99 {percentile(latencies, 99):7.1f} ms  "
              f"{rps:7.1f} req/s  failed {sum(failed.values())} {dict(failed) if failed else ''}")
    print(f"  added latency: p50 +{percentile(through[0], 50) - percentile(direct[0], 50):.1f} ms, "
          f"p99 +{percentile(through[0], 99) - percentile(direct[0], 99):.1f} ms")
    print(f"  throughput ratio gateway / direct: {through[1] / direct[1]:.2f}")


if __name__ == "__main__":
    main()
