"""Stage 2 on a Dask cluster (data_processor.task_runner: dask, dask_address) gives what the thread runner gives."""

from __future__ import annotations

import json
import subprocess
import sys

from distributed import LocalCluster

from tests.conftest import REPO


def cli(root, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "pipeline.py"), "--config", config, *args], cwd=root,
                          capture_output=True, text=True, timeout=600)


def test_conversion_on_a_dask_cluster_matches_the_thread_runner(tmp_path, sample_pdf_dir):
    base = f"inherit: {REPO / 'configs' / 'local.yaml'}\nroot: .\ndata_collector:\n  local:\n    pdf_dir: {sample_pdf_dir}\n"
    for name in ("threads", "dask"):
        (tmp_path / name).mkdir()
    (tmp_path / "threads" / "config.yaml").write_text(base)
    assert cli(tmp_path / "threads", "config.yaml", "--end", "2").returncode == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        (tmp_path / "dask" / "config.yaml").write_text(
            base + f"data_processor:\n  task_runner: dask\n  dask_address: {cluster.scheduler_address}\n")
        result = cli(tmp_path / "dask", "config.yaml", "--end", "2")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "convert_document" in cluster.scheduler.task_prefixes  # the conversions ran on this cluster
    manifest = json.loads((tmp_path / "dask/data/processed/manifest.json").read_text())
    assert len(manifest) == len(list(sample_pdf_dir.glob("*.pdf"))) and all(entry["status"] == "ok" for entry in manifest)
    chunks = {name: json.loads((tmp_path / name / "data/chunks/chunks.json").read_text()) for name in ("threads", "dask")}
    assert chunks["dask"] == chunks["threads"] and len(chunks["dask"]) > 10
