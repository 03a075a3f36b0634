"""Benchmark: what the gateway costs on top of the backend it fronts, seen by a load generator it does not share.

    .venv/bin/python -m bench.gateway [--requests 20000] [--connections 64 256] [--backend-latency-ms 50]
                                      [--workers 1]
    .venv/bin/python -m bench.gateway --engine configs/local-vllm.yaml [--seconds 30]   # the real vLLM (CPU build)
    .venv/bin/python -m bench.gateway --streams [--rounds 3] [--token-delay-ms 20]   # streamed, against the fake
    .venv/bin/python -m bench.gateway --engine configs/local-vllm.yaml --streams        # streamed, the real vLLM

Three processes on loopback: a fake vLLM (OpenAI chat API, fixed latency), the gateway in front
of it, and wrk (C, one thread; installed from Debian when missing) generating the load. At each
connection count the same number of requests goes once straight to the backend's
/v1/chat/completions and once through the gateway's /ask; we print the throughput ratio, the
latency the gateway adds at p50 and p99, and errors by kind, against the goals: ratio ≥ 0.9 at
64 connections and ≥ 0.8 at 256, added p50 ≤ 5 ms, no errors.

``--engine CONFIG`` (a project after stage 5, serving.backend: vllm) measures against the real engine instead:
vLLM started as --serve-local starts it (or the one already answering at serving.vllm_url), the gateway in front
of it with the registered adapter; wrk sends the same short request (4 tokens of the base model) straight to vLLM
and through the gateway (goal: ratio ≥ 0.95); then the gateway on the local backend (transformers in its process) and on vLLM
answer the test questions at 1, 4 and 16 requests in flight (64 tokens, greedy, as evaluated): generated tokens/s
of each, and their ratio. There the model is the bottleneck (seconds a request), not the client.

``--streams``: answers streamed (OpenAI's protocol, include_usage) straight from the backend and through the
gateway's /v1/chat/completions (the alias, the same messages), at 1, 4 and 16 streams, in alternating rounds:
time to the first token at p50 and generated tokens/s, as ratios (goals: ≥ 0.95× tokens/s, ≤ 5 ms added to the
first token). Without ``--engine`` the backend is the fake vLLM writing a word every ``--token-delay-ms``: a fixed
pace, so what the gateway adds is what shows; with ``--engine``, the real vLLM's test questions (its own pace
varies by seconds on a CPU, which hides milliseconds). The client is this process, apart from both servers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from core.config import load_config
from core.prompts import system_prompt
from core.results import EvaluationReport, Registration, read
from harness.gateway import ADMIN_TOKEN, GatewayProcess
from harness.loopback import free_port
from harness.vllm import VLLMFaults, fake_vllm
from harness.vllm_engine import VLLMEngine

BASE = "bench-base"
SCRIPT = Path(__file__).with_name("wrk_post.lua")
QUESTION = "What is the recommended daily folic acid intake in early pregnancy?"
GOALS = {64: 0.9, 256: 0.8}
ADDED_P50_GOAL_MS = 5.0


def ensure_wrk() -> str:
    """wrk on PATH, installed from Debian's packages when missing (root only); otherwise one line naming the fix."""
    if found := shutil.which("wrk"):
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install wrk) ...", flush=True)
        for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ,
                           "DEBIAN_FRONTEND": "noninteractive"})
        if found := shutil.which("wrk"):
            return found
    sys.exit("bench.gateway needs wrk (a load generator that is not the gateway's own client): "
             "apt-get install wrk, or put a wrk binary on PATH")


def serve_fake_vllm(port: int, latency_ms: float, token_delay_ms: float) -> None:
    import uvloop

    uvloop.install()  # the fake backend as fast as it can be: the ratio is against it
    with fake_vllm(BASE, VLLMFaults(latency_s=latency_ms / 1000, token_delay_s=token_delay_ms / 1000), port=port):
        while True:
            time.sleep(3600)


def wrk(binary: str, url: str, body: dict, seconds: float, connections: int, timeout_s: float = 10) -> dict:
    """One wrk run of ``seconds`` at ``connections`` open connections; its JSON summary."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(body, file)
    try:
        result = subprocess.run([binary, "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", f"{timeout_s:g}s",
                                 "-s", str(SCRIPT), url, "--", file.name], capture_output=True, text=True, check=True)
    finally:
        os.unlink(file.name)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["errors"] = {kind: summary[kind] for kind in ("connect", "read", "write", "status", "timeout")
                         if summary[kind]}
    return summary


def wait_for(url: str) -> None:
    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children (the gateway's workers), from /proc."""
    def own(p: int | str) -> tuple[int, float]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total = own(pid)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent, seconds = own(entry.name)
            except (OSError, IndexError):
                continue
            total += seconds if parent == pid else 0.0
    return total


def measure(binary: str, url: str, body: dict, requests: int, connections: int, pids: dict[str, int]) -> dict:
    """A 3 s warm-up (connections opened, rate seen), then a run long enough for ``requests`` at that rate;
    with the CPU time each of ``pids`` spent per request meanwhile (µs)."""
    warmup = wrk(binary, url, body, 3, connections)
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    summary = wrk(binary, url, body, max(5.0, 1.3 * requests / warmup["rps"] + 2), connections)
    summary["cpu_us"] = {name: (cpu_seconds(pid) - before[name]) / summary["requests"] * 1e6
                         for name, pid in pids.items()}
    return summary


def report(connections: int, direct: dict, through: dict) -> bool:
    ratio = through["rps"] / direct["rps"]
    added_p50 = (through["p50_us"] - direct["p50_us"]) / 1000
    added_p99 = (through["p99_us"] - direct["p99_us"]) / 1000
    errors = {**{f"direct {k}": v for k, v in direct["errors"].items()},
              **{f"gateway {k}": v for k, v in through["errors"].items()}}
    met = ratio >= GOALS.get(connections, 0.8) and added_p50 <= ADDED_P50_GOAL_MS and not errors
    print(f"  {connections:>5} conns  {direct['requests']} / {through['requests']} requests")
    print(f"               direct {direct['rps']:7.0f} req/s p50 {direct['p50_us'] / 1000:6.1f} ms "
          f"p99 {direct['p99_us'] / 1000:6.1f} ms | gateway {through['rps']:7.0f} req/s "
          f"p50 {through['p50_us'] / 1000:6.1f} ms p99 {through['p99_us'] / 1000:6.1f} ms")
    print(f"               ratio {ratio:.2f} (goal ≥ {GOALS.get(connections, 0.8)}), added p50 {added_p50:+.1f} ms "
          f"(goal ≤ {ADDED_P50_GOAL_MS:g}), added p99 {added_p99:+.1f} ms, errors {errors or 0} → "
          f"{'met' if met else 'MISSED'}")
    cpu = through["cpu_us"]
    print(f"               CPU per request through the gateway: gateway {cpu['gateway']:.0f} µs, fake vLLM "
          f"{cpu['vllm']:.0f} µs (direct: fake vLLM {direct['cpu_us']['vllm']:.0f} µs); {os.cpu_count()} cores "
          f"→ at most ~{os.cpu_count() * 1e6 / (cpu['gateway'] + cpu['vllm']):.0f} req/s before wrk's share")
    return met


def tokens_per_second(url: str, questions: list[str], concurrency: int, max_tokens: int) -> tuple[float, int]:
    """Generated tokens/s with ``concurrency`` requests in flight through a gateway, over ``concurrency`` questions
    (at least 8); and the requests that failed."""
    import asyncio

    asked = (questions * 16)[: max(8, concurrency)]

    async def run() -> tuple[float, int]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        for question in asked:
            queue.put_nowait(question)
        tokens, failed = 0, 0
        async with httpx.AsyncClient(timeout=600) as client:
            async def worker() -> None:
                nonlocal tokens, failed
                while not queue.empty():
                    reply = await client.post(f"{url}/ask", json={"question": queue.get_nowait(),
                                                                    "max_tokens": max_tokens})
                    if reply.status_code == 200:
                        tokens += reply.json()["usage"]["completion_tokens"]
                    else:
                        failed += 1
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return tokens / (time.perf_counter() - started), failed

    return asyncio.run(run())


def streamed(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Every body streamed, ``concurrency`` at a time: times to the first content event (s), tokens (usage), the
    time it took, failures."""
    import asyncio

    import aiohttp

    async def run() -> dict:
        queue: asyncio.Queue[dict] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        firsts, tokens, failed = [], 0, 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
            async def worker() -> None:
                nonlocal tokens, failed
                while not queue.empty():
                    body, started, first = queue.get_nowait(), time.perf_counter(), None
                    async with session.post(url, json=body) as reply:
                        if reply.status != 200:
                            failed += 1
                            continue
                        async for line in reply.content:
                            if not line.startswith(b"data: {"):
                                continue
                            chunk = json.loads(line[6:])
                            if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                                first = time.perf_counter() - started
                            tokens += (chunk.get("usage") or {}).get("completion_tokens", 0)
                    firsts.append(first if first is not None else time.perf_counter() - started)
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        return {"ttfts": firsts, "tokens": tokens, "seconds": elapsed, "failed": failed}

    return asyncio.run(run())


def compare_streams(direct_url: str, direct_model: str, gateway_url: str, alias: str, system: str,
                    questions: list[str], tokens: int, rounds: int) -> list[bool]:
    """At 1, 4 and 16 streams: the same questions straight to the backend and through the gateway, alternating
    for ``rounds`` rounds (a noisy engine drifts: each side gets the same share of its moods); prints the ratios."""

    def bodies(model: str, n: int) -> list[dict]:
        return [{"model": model, "max_tokens": tokens, "temperature": 0.0, "stream": True,
                 "stream_options": {"include_usage": True},
                 "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}]}
                for q in (questions * 64)[:n]]

    # warm-up: every prompt measured below, one token each, so both sides find them in vLLM's prefix cache (else
    # the side asked second would, and start sooner for it)
    streamed(f"{direct_url}/v1/chat/completions", [{**b, "max_tokens": 1} for b in bodies(direct_model, 16)], 16)
    streamed(f"{gateway_url}/v1/chat/completions", bodies(alias, 2), 2)
    met = []
    for level in (1, 4, 16):
        n = max(4, level)
        sides = {"direct": [], "gateway": []}
        for round_ in range(rounds):  # each side first in every other round
            for side in (("direct", "gateway") if round_ % 2 == 0 else ("gateway", "direct")):
                url, model = (direct_url, direct_model) if side == "direct" else (gateway_url, alias)
                sides[side].append(streamed(f"{url}/v1/chat/completions", bodies(model, n), level))
        direct, through = ({"tokens_s": sum(r["tokens"] for r in runs) / sum(r["seconds"] for r in runs),
                            "ttft_p50_ms": _median([t for r in runs for t in r["ttfts"]]) * 1000,
                            "failed": sum(r["failed"] for r in runs)} for runs in sides.values())
        ratio, added = through["tokens_s"] / direct["tokens_s"], through["ttft_p50_ms"] - direct["ttft_p50_ms"]
        met += [ratio >= 0.95, added <= 5]
        print(f"  {level:>3} streams  direct {direct['tokens_s']:7.1f} tok/s TTFT p50 {direct['ttft_p50_ms']:8.1f} ms"
              f" | gateway {through['tokens_s']:7.1f} tok/s TTFT p50 {through['ttft_p50_ms']:8.1f} ms | tokens/s "
              f"ratio {ratio:.3f} (goal ≥ 0.95: {'met' if ratio >= 0.95 else 'MISSED'}), TTFT added "
              f"{added:+.1f} ms (goal ≤ 5: {'met' if added <= 5 else 'MISSED'}), failed "
              f"{direct['failed']} / {through['failed']}")
    return met


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def streams(config_path: Path, rounds: int) -> None:
    """Streamed through the gateway vs straight from the real vLLM (see the module's docstring)."""
    config = load_config(config_path)
    registration = read(config, Registration, "bench.gateway --engine --streams")
    questions = [p.question for p in read(config, EvaluationReport, "bench.gateway --engine", "eval_finetuned").predictions]
    vllm_url, adapter, tokens = config.serving.vllm_url.rstrip("/"), registration.name, config.evaluation.max_new_tokens
    try:
        httpx.get(f"{vllm_url}/health", timeout=2).raise_for_status()
        running = None
    except httpx.HTTPError:
        running = VLLMEngine(config_path, config.path(config.paths.logs) / "vllm-bench.out").__enter__()
    try:
        with GatewayProcess({"ADMIN_TOKEN": ADMIN_TOKEN}, args=("--config", config_path.name, "--backend", "vllm"),
                            cwd=str(config_path.parent), ready_timeout_s=300) as gateway:
            gateway.wait_ready(300)
            alias = httpx.get(f"{gateway.url}/v1/models", timeout=10).json()["data"][0]["id"]
            print(f"streamed: vLLM (CPU build) at {vllm_url}, adapter {adapter} (alias {alias}), {tokens} tokens a "
                  f"question, greedy, {rounds} alternating rounds; client: this process; {os.cpu_count()} cores")
            met = compare_streams(vllm_url, adapter, gateway.url, alias, system_prompt(config.domain), questions,
                                  tokens, rounds)
    finally:
        if running is not None:
            running.__exit__()
    print(f"goals: {'all met' if all(met) else f'{met.count(False)} of {len(met)} missed'}")


def fake_streams(token_delay_ms: float, latency_ms: float, rounds: int) -> None:
    """Streamed through the gateway vs straight from the fake vLLM (fixed pace: what the gateway adds shows)."""
    port = free_port()
    backend = subprocess.Popen([sys.executable, "-m", "bench.gateway", "--serve-fake-vllm", str(port),
                                "--backend-latency-ms", str(latency_ms), "--token-delay-ms", str(token_delay_ms)])
    vllm_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{vllm_url}/health")
        with tempfile.TemporaryDirectory() as logs, GatewayProcess({
                "GATEWAY_BACKEND": "vllm", "GATEWAY_VLLM_URL": vllm_url, "GATEWAY_BASE_MODEL": BASE,
                "GATEWAY_DOMAIN": "pregnancy", "GATEWAY_LOGS_DIR": logs}) as gateway:
            gateway.wait_ready()
            print(f"streamed: fake vLLM (a word every {token_delay_ms:g} ms after {latency_ms:g} ms), {rounds} "
                  f"alternating rounds; client: this process; {os.cpu_count()} cores")
            met = compare_streams(vllm_url, BASE, gateway.url, "pregnancy", system_prompt("pregnancy"),
                                  [QUESTION] * 4, 64, rounds)
    finally:
        backend.terminate()
        backend.wait(timeout=10)
    print(f"goals: {'all met' if all(met) else f'{met.count(False)} of {len(met)} missed'}")


def engine(config_path: Path, seconds: float, binary: str) -> None:
    """The gateway against the real vLLM, and the local backend against vLLM (see the module's docstring)."""
    config = load_config(config_path)
    registration = read(config, Registration, "bench.gateway --engine")
    questions = [p.question for p in read(config, EvaluationReport, "bench.gateway --engine", "eval_finetuned").predictions]
    vllm_url, adapter = config.serving.vllm_url.rstrip("/"), registration.name
    try:
        httpx.get(f"{vllm_url}/health", timeout=2).raise_for_status()
        running = None
    except httpx.HTTPError:
        running = VLLMEngine(config_path, config.path(config.paths.logs) / "vllm-bench.out").__enter__()
    gateway_args = {"cwd": str(config_path.parent), "ready_timeout_s": 300}
    try:
        with GatewayProcess({"ADMIN_TOKEN": ADMIN_TOKEN}, args=("--config", config_path.name, "--backend", "vllm"),
                            **gateway_args) as gateway:
            gateway.wait_ready(300)
            # the base model and 4 tokens: with an adapter the CPU build generates ~2 tokens/s here, too few requests
            # a minute for wrk's percentiles to mean anything; the gateway's work per request is the same either way
            short = {"max_tokens": 4, "temperature": 0.0}
            base = config.finetuning.base_model
            direct_body = {"model": base, **short, "messages": [
                {"role": "system", "content": system_prompt(config.domain)}, {"role": "user", "content": QUESTION}]}
            print(f"real engine: vLLM (CPU build) at {vllm_url}, adapter {adapter}; wrk 1 thread, {seconds:g} s a run, "
                  f"{os.cpu_count()} cores")
            wrk(binary, f"{vllm_url}/v1/chat/completions", direct_body, 20, 4, 300)  # warm-up: the first runs are slow
            for connections in (4, 16):
                direct = wrk(binary, f"{vllm_url}/v1/chat/completions", direct_body, seconds, connections, 300)
                through = wrk(binary, f"{gateway.url}/ask", {"question": QUESTION, "adapter": base, **short}, seconds,
                              connections, 300)
                ratio = through["rps"] / direct["rps"]
                print(f"  {connections:>3} conns  direct {direct['rps']:6.2f} req/s p50 {direct['p50_us'] / 1000:7.0f} ms"
                      f" | gateway {through['rps']:6.2f} req/s p50 {through['p50_us'] / 1000:7.0f} ms | ratio "
                      f"{ratio:.2f} (goal ≥ 0.95: {'met' if ratio >= 0.95 else 'MISSED'}), added p50 "
                      f"{(through['p50_us'] - direct['p50_us']) / 1000:+.1f} ms, errors "
                      f"{direct['errors'] or 0} / {through['errors'] or 0}")
            served = {level: tokens_per_second(gateway.url, questions, level, config.evaluation.max_new_tokens)
                      for level in (1, 4, 16)}
        with GatewayProcess({"ADMIN_TOKEN": ADMIN_TOKEN}, args=("--config", config_path.name, "--backend", "local"),
                            **gateway_args) as local:
            local.wait_ready(300)
            in_process = {level: tokens_per_second(local.url, questions, level, config.evaluation.max_new_tokens)
                          for level in (1, 4, 16)}
    finally:
        if running is not None:
            running.__exit__()
    print(f"  generated tokens/s through the gateway, {config.evaluation.max_new_tokens} tokens a question, greedy:")
    for level in (1, 4, 16):
        (v, v_failed), (lo, lo_failed) = served[level], in_process[level]
        print(f"  {level:>3} in flight  vLLM {v:6.1f} tok/s | local backend {lo:6.1f} tok/s | vLLM / local "
              f"{v / lo:.2f} | failed {v_failed} / {lo_failed}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000, help="at least, per run (each connection count, each target)")
    parser.add_argument("--connections", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--backend-latency-ms", type=float, default=50)
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes (serving.workers)")
    parser.add_argument("--engine", type=Path, help="a project config (serving.backend: vllm) after stage 5: measure "
                                                         "against the real vLLM engine")
    parser.add_argument("--seconds", type=float, default=30, help="--engine: each wrk run's length")
    parser.add_argument("--streams", action="store_true", help="streamed answers, gateway vs the backend directly")
    parser.add_argument("--rounds", type=int, default=3, help="--streams: alternating rounds at each level")
    parser.add_argument("--token-delay-ms", type=float, default=20, help="--streams without --engine: the fake's pace")
    parser.add_argument("--serve-fake-vllm", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake_vllm:
        serve_fake_vllm(args.serve_fake_vllm, args.backend_latency_ms, args.token_delay_ms)
        return
    if args.streams:
        if args.engine:
            streams(args.engine.resolve(), args.rounds)
        else:
            fake_streams(args.token_delay_ms, args.backend_latency_ms, args.rounds)
        return
    binary = ensure_wrk()
    if args.engine:
        engine(args.engine.resolve(), args.seconds, binary)
        return
    port = free_port()
    backend = subprocess.Popen([sys.executable, "-m", "bench.gateway", "--serve-fake-vllm", str(port),
                                "--backend-latency-ms", str(args.backend_latency_ms), "--token-delay-ms", "0"])
    vllm_url = f"http://127.0.0.1:{port}"
    direct_body = {"model": BASE, "max_tokens": 64, "temperature": 0.0, "messages": [
        {"role": "system", "content": system_prompt("pregnancy")}, {"role": "user", "content": QUESTION}]}
    print(f"gateway vs direct: {args.requests} requests per run, backend latency {args.backend_latency_ms:g} ms, "
          f"{args.workers} gateway worker(s), load from wrk (1 thread, separate process), {os.cpu_count()} cores")
    met = []
    try:
        wait_for(f"{vllm_url}/health")
        with tempfile.TemporaryDirectory() as logs, GatewayProcess({
                "GATEWAY_BACKEND": "vllm", "GATEWAY_VLLM_URL": vllm_url, "GATEWAY_BASE_MODEL": BASE,
                "GATEWAY_DOMAIN": "pregnancy", "GATEWAY_LOGS_DIR": logs, "GATEWAY_DEFAULT_MAX_TOKENS": "64",
                "GATEWAY_WORKERS": str(args.workers)}) as gateway:
            gateway.wait_ready()
            pids = {"gateway": gateway.process.pid, "vllm": backend.pid}
            for connections in args.connections:
                direct = measure(binary, f"{vllm_url}/v1/chat/completions", direct_body, args.requests, connections,
                                 {"vllm": backend.pid})
                through = measure(binary, f"{gateway.url}/ask", {"question": QUESTION}, args.requests, connections,
                                  pids)
                met.append(report(connections, direct, through))
    finally:
        backend.terminate()
        backend.wait(timeout=10)
    print(f"goals: {'all met' if all(met) else f'{met.count(False)} of {len(met)} missed'}")


if __name__ == "__main__":
    main()
