"""Benchmark: stage 1 downloads vs a sequential loop vs the ideal, against a loopback host with latency.

    .venv/bin/python -m bench.downloads [--files 200] [--latency-ms 50] [--concurrency 16]

Every request waits ``latency`` on the server before answering, like a distant host. The
ideal wall time for N files at concurrency C is N·latency/C; a sequential loop needs N·latency.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import requests

from core.config import DataCollector
from harness.pdf_host import pdf_host
from harness.project import REPO
from tasks.collect.download import DownloadPolicy, download_documents
from tasks.collect.sample_corpus import render_pdf
from tasks.common.records import SourceRef


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    base = render_pdf((REPO / "sample_corpus" / "01-prenatal-care.md").read_text())
    pdfs = {f"doc{i}.pdf": base + f"\n% copy {i}\n".encode() for i in range(args.files)}  # distinct content
    latency = args.latency_ms / 1000
    policy = DownloadPolicy.of(DataCollector(max_concurrent_downloads=args.concurrency, max_per_host=args.concurrency,
                                            allow_private_addresses=True))

    with pdf_host(pdfs, latency_s=latency) as server, tempfile.TemporaryDirectory() as tmp:
        refs = [SourceRef(url=f"{server.url}/pdf/{name}", source="bench") for name in pdfs]

        started = time.perf_counter()
        docs = asyncio.run(download_documents.fn(refs, Path(tmp) / "ours", policy))
        ours = time.perf_counter() - started
        assert all(d.status == "ok" for d in docs), "a download failed"

        started = time.perf_counter()
        with requests.Session() as session:
            for ref in refs:
                (Path(tmp) / "seq.pdf").write_bytes(session.get(ref.url, timeout=30).content)
        sequential = time.perf_counter() - started

    ideal = args.files * latency / args.concurrency
    print(f"downloads: {args.files} files, {args.latency_ms:.0f} ms latency each, concurrency {args.concurrency}")
    print(f"  ours        {ours:7.3f} s")
    print(f"  sequential  {sequential:7.3f} s")
    print(f"  ideal       {ideal:7.3f} s  (N x latency / concurrency)")
    print(f"  speed-up vs sequential: {sequential / ours:5.1f}x")
    print(f"  ours / ideal:           {ours / ideal:5.2f}  (1.00 = no overhead beyond the latency)")


if __name__ == "__main__":
    main()
