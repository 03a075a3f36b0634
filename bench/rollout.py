"""Benchmark: stage 6's blue/green rollout of gateway containers under load vs the naive way (one
gateway container on the public port, stopped and replaced, as a plain compose service would be):
requests failed, time without service, latency.

    .venv/bin/python -m bench.rollout

Runs on the project's private engine (scripts/docker_engine.sh, started and stopped here when not
running) with the gateway and edge images built on the local base, a stand-in vLLM answering in
20 ms on loopback, and 16 clients asking through the edge all along. Both ways roll out one new
adapter to the same stack; the rollout is the real `pipeline.py --stage 6`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from harness.docker import DockerEngine, build_image
from harness.gateway import ADMIN_TOKEN, LoadGenerator
from harness.loopback import free_port
from harness.project import rollout_project, run_pipeline
from harness.vllm import VLLMFaults, fake_vllm

MODEL = "meta-llama/Llama-3.2-3B-Instruct"
CLIENTS = 16


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] * 1000


def rollout(root: Path) -> subprocess.CompletedProcess[str]:
    return run_pipeline(root / "config.yaml", "--stage", "6", env={**os.environ, "ADMIN_TOKEN": ADMIN_TOKEN}, timeout=300)


def failed(load: LoadGenerator) -> int:
    return sum(count for status, count in load.statuses.items() if status != 200)


def main() -> None:
    import docker

    from tasks.release import containers

    with DockerEngine() as engine, tempfile.TemporaryDirectory() as tmp, \
            fake_vllm(MODEL, VLLMFaults(latency_s=0.02)) as vllm:
        client = docker.DockerClient(base_url=engine.host, timeout=600)
        for dockerfile, tag in (("Dockerfile.api", "domain-llm-gateway:bench"), ("Dockerfile.edge", "domain-llm-edge:bench")):
            build_image(client, dockerfile, tag)
        public = free_port()
        edge = f"http://127.0.0.1:{public}"
        serving = {"rollout": "containers", "docker_host": engine.host, "host": "127.0.0.1", "port": public,
                   "gateway_url": edge, "vllm_url": vllm.url, "gateway_image": "domain-llm-gateway:bench",
                   "edge_image": "domain-llm-edge:bench", "container_ports": [free_port(), free_port()]}
        root = Path(tmp)
        try:
            first = rollout(rollout_project(root, "bench-qa-lora-v1.0", serving, finetuning={"base_model": MODEL}))
            assert first.returncode == 0, first.stderr

            with LoadGenerator(edge, CLIENTS) as steady:
                time.sleep(5)
            rollout_project(root, "bench-qa-lora-v1.1", serving, finetuning={"base_model": MODEL})
            with LoadGenerator(edge, CLIENTS) as blue_green:
                started = time.perf_counter()
                result = rollout(root)
                rollout_s = time.perf_counter() - started
            assert result.returncode == 0, result.stderr
            steps = json.loads((root / "reports/rollout.json").read_text())["timings_s"]

            # the naive way: clients on the serving container's port; stop it, start the new one on that port
            active = next(iter(containers.running_gateways(client).values()))
            environment = dict(item.split("=", 1) for item in active.container.attrs["Config"]["Env"])
            environment["GATEWAY_ADAPTER_NAME"] = "bench-qa-lora-v1.2"
            environment["GATEWAY_ADAPTER_PATH"] = "/models/registry/bench-qa-lora-v1.2"
            with LoadGenerator(active.url, CLIENTS) as naive:
                time.sleep(1)
                started = time.perf_counter()
                active.container.stop(timeout=30)
                active.container.remove()
                replacement = containers.start_gateway(client, client.images.get("domain-llm-gateway:bench"),
                                                       "bench-qa-lora-v1.2", "1.2", active.port, environment)
                containers.wait_ready(replacement, 120)
                gap_s = time.perf_counter() - started
                time.sleep(1)
        finally:
            for container in client.containers.list(all=True, filters={"label": containers.ROLE}):
                container.remove(force=True)
            client.close()

    print(f"rollout of a new adapter's gateway container, {CLIENTS} clients asking all along "
          f"(vLLM stand-in: 20 ms per answer)")
    for label, load in (("steady, through the edge", steady), ("blue/green (stage 6)", blue_green),
                        ("naive stop, then start", naive)):
        total = sum(load.statuses.values())
        print(f"  {label:<25} {total:6d} requests  failed {failed(load):5d} ({failed(load) / total:4.0%})   "
              f"p99 {p99(load.latencies):7.1f} ms ({p99(load.latencies) / p99(steady.latencies):4.2f}x steady)   "
              f"max {max(load.latencies) * 1000:7.1f} ms")
    print(f"  blue/green: `--stage 6` {rollout_s:.1f} s (CLI and Prefect start included); its steps: "
          + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in steps.items()))
    print(f"  naive: no gateway for {gap_s:.1f} s; outcomes {dict(naive.statuses)}")

if __name__ == "__main__":
    main()
