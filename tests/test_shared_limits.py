"""Prefect-managed limits shared by runs: two pipeline runs at once (two deployments, say) stay together
within one download concurrency limit and one LLM rate limit kept on the Prefect server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.llm import fake_llm
from harness.pdf_host import pdf_host
from harness.project import REPO, without_prefect_server, write_profile

pytestmark = pytest.mark.e2e

KEY = "shared-limits-gemini-key"


def project(root: Path, pdf_url: str, names: list[str], llm_url: str, limits: dict[str, str]) -> Path:
    root.mkdir()
    (root / "urls.txt").write_text("".join(f"{pdf_url}/pdf/{name}?copy={copy}\n" for name in names for copy in (1, 2)))
    return write_profile(root, {
        "data_collector": {"local": {"dir": None, "url_file": "urls.txt"}, "allow_private_addresses": True,
                           "max_concurrent_downloads": 8, "max_per_host": 8},
        "dataset_generator": {"provider": "gemini", "base_url": llm_url, "max_tokens": 150, "max_concurrent_requests": 8,
                              "requests_per_minute": 6000},
        "orchestration": limits})


def run(config: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(REPO / "pipeline.py"), "--config", str(config), *args],
                            cwd=config.parent, env={**env, "GEMINI_API_KEY": KEY}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))


def test_two_runs_at_once_share_the_download_and_llm_limits(tmp_path, sample_pdfs, prefect_server):
    """On the session's server: the limits made here are this test's alone."""
    server = prefect_server
    with pdf_host(sample_pdfs, latency_s=0.5) as pdfs, fake_llm("gemini", KEY) as llm:
        for args in (("downloads-shared", "--limit", "2"), ("llm-shared", "--limit", "1", "--slot-decay-per-second", "2")):
            created = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "gcl", "create", *args],
                                     env=server.env, capture_output=True, text=True, timeout=120)
            assert created.returncode == 0, created.stdout + created.stderr
        limits = {"download_concurrency_limit": "downloads-shared", "llm_rate_limit": "llm-shared"}
        names = sorted(sample_pdfs)[:3]  # three documents are enough to fill both limits
        configs = [project(tmp_path / name, pdfs.url, names, llm.url, limits) for name in ("a", "b")]

        runs = [run(config, server.env, "--end", "3") for config in configs]
        for process in runs:
            out, err = process.communicate(timeout=600)
            assert process.returncode == 0, err[-3000:]
            assert "collect: 6 sources, 6 ok" in out

    # each run alone would have 8 downloads in flight and send its LLM requests 10 ms apart
    assert sum(hit.path.startswith("/pdf/") for hit in pdfs.hits) == 12
    assert pdfs.most_in_flight == 2
    requests = [hit.at for hit in llm.hits if hit.path.endswith(":generateContent")]
    assert len(requests) >= 8
    assert busiest_second(requests) <= 1 + 2 + 1  # the burst of 1, two slots decayed per second, one for the edges


def test_a_shared_limit_missing_on_the_server_is_named_before_any_work(tmp_path, prefect_server):
    config = project(tmp_path / "p", "http://127.0.0.1:9", ["x.pdf"], "http://127.0.0.1:9", {"llm_rate_limit": "gemini-quota"})
    process = run(config, prefect_server.env, "--end", "3")  # the session's server, which has no such limit
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2
    assert "orchestration.llm_rate_limit: no global concurrency limit 'gemini-quota'" in err
    assert "prefect gcl create gemini-quota --limit N --slot-decay-per-second R" in err
    assert not (tmp_path / "p/data").exists()

    alone = run(config, without_prefect_server(), "--end", "3")
    _, err = alone.communicate(timeout=300)
    assert alone.returncode == 2 and "PREFECT_API_URL is not set" in err
