"""Stage 2 on a Dask cluster (data_processor.task_runner: dask, dask_address) gives what the thread runner gives."""

from __future__ import annotations

import json

import pytest
from distributed import LocalCluster

from harness.project import run_pipeline, write_profile

pytestmark = pytest.mark.e2e


def test_conversion_on_a_dask_cluster_matches_the_thread_runner(tmp_path, sample_pdf_dir, chunked_sample):
    """The thread runner's result is the shared sample project's (stages 1-2, the profile's default runner)."""
    base = {"data_collector": {"local": {"dir": str(sample_pdf_dir)}}}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        config = write_profile(tmp_path / "dask", {**base, "data_processor": {
            "task_runner": "dask", "dask_address": cluster.scheduler_address}})
        result = run_pipeline(config, "--end", "2", timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "convert_document" in cluster.scheduler.task_prefixes  # the conversions ran on this cluster
    manifest = json.loads((tmp_path / "dask/data/processed/manifest.json").read_text())
    assert len(manifest) == len(list(sample_pdf_dir.glob("*.pdf"))) and all(entry["status"] == "ok" for entry in manifest)
    chunks = {name: json.loads((root / "data/chunks/chunks.json").read_text())
              for name, root in (("threads", chunked_sample), ("dask", tmp_path / "dask"))}
    assert chunks["dask"] == chunks["threads"] and len(chunks["dask"]) > 10
