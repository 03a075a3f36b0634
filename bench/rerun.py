"""Benchmark: the whole pipeline's first run vs a rerun with nothing new vs a refresh with one new document.

    .venv/bin/python -m bench.rerun

Nightly schedules and retried flow runs only pay off if finished work costs nothing the
second time. Runs `pipeline.py` on the local profile against a Prefect server started first
(as a worker would; the server's start-up is not timed): the first run does stages 1–5
(stage 6 is skipped: no gateway), the rerun repeats it with nothing new, then the data
refresh (stages 1–3, the nightly deployment) runs with one new PDF and is compared with the
same stages on a cold project. Goal: rerun < 5 % of the first run.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness.prefect_server import PrefectServer
from harness.project import REPO, run_pipeline, write_profile
from tasks.collect.sample_corpus import build_corpus


def make_project(root: Path, pdfs: list[Path]) -> Path:
    (root / "pdfs").mkdir(parents=True)
    for pdf in pdfs:
        shutil.copy(pdf, root / "pdfs" / pdf.name)
    return write_profile(root, {"data_collector": {"local": {"dir": "pdfs"}}})


def timed(config: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = run_pipeline(config, *args, env=env, timeout=3600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"pipeline.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return elapsed, result.stdout


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        build_corpus(REPO / "sample_corpus", tmp / "corpus")
        pdfs = sorted((tmp / "corpus").glob("*.pdf"))
        new_pdf, first_pdfs = pdfs[-1], pdfs[:-1]
        with PrefectServer(tmp / "prefect") as server:
            project = make_project(tmp / "project", first_pdfs)
            first, _ = timed(project, server.env)
            rerun, rerun_out = timed(project, server.env)
            shutil.copy(new_pdf, project.parent / "pdfs" / new_pdf.name)
            refresh, refresh_out = timed(project, server.env, "--end", "3")
            cold, _ = timed(make_project(tmp / "cold", pdfs), server.env, "--end", "3")

    print(f"full pipeline on the local profile ({len(first_pdfs)} PDFs, stages 1-5, real training on the CPU)")
    print(f"  first run                      {first:7.1f} s")
    print(f"  rerun, nothing new             {rerun:7.1f} s   {rerun / first:6.1%} of the first run (goal < 5%)")
    print(f"data refresh (stages 1-3) with 1 new PDF of {len(pdfs)}")
    print(f"  incremental                    {refresh:7.1f} s   {refresh / cold:6.1%} of the same stages on a cold project"
          f" ({cold:.1f} s)")
    print("what the rerun and the refresh said they skipped:")
    for line in (rerun_out + refresh_out).splitlines():
        if any(word in line for word in ("settled", "already", "cached", "unchanged", "no new", "skipp")):
            print(f"  {line.strip()}")


if __name__ == "__main__":
    main()
