"""Stage 1 — collect: find documents (SerpAPI or local), download them, record every outcome."""

from __future__ import annotations

from collections import Counter

from prefect import flow
from prefect.artifacts import acreate_table_artifact

from core.config import PipelineConfig
from core.stages import artifact_key
from tasks.collect.download import DownloadPolicy, download_documents, import_local_files
from tasks.collect.sources import source_urls, sources, unsettled
from tasks.common.records import Document
from tasks.common.store import metadata_index
from tasks.report.console import progress_bar, say


async def _report(documents: list[Document], skipped: int) -> None:
    by_status = Counter(d.status for d in documents)
    kinds = Counter(kind for kind, _ in {(d.kind, d.sha256) for d in documents if d.status == "ok"})
    unique = " and ".join(f"{n} {'PDFs' if kind == 'pdf' else 'web pages'}" for kind, n in sorted(kinds.items()))
    failures = "".join(f", {n} {status}" for status, n in sorted(by_status.items()) if status != "ok")
    say(f"collect: {len(documents)} sources, {by_status.get('ok', 0)} ok ({unique or 'nothing'} unique), "
        f"{skipped} settled earlier (not fetched again){failures}")
    await acreate_table_artifact(
        key=artifact_key("1"),
        table=[{"url": d.url, "kind": d.kind if d.status == "ok" else "", "status": d.status,
                "sha256": (d.sha256 or "")[:12], "bytes": d.bytes,
                "pages": d.pages, "error": d.error or ""} for d in documents],
        description=f"Stage 1: {by_status.get('ok', 0)} of {len(documents)} sources collected; "
                    f"{skipped} skipped as already on disk.",
    )


@flow(name="collect")
async def collect(config: PipelineConfig) -> list[Document]:
    metadata = metadata_index(config)
    files, refs = sources(config)
    new_files, new_refs = unsettled(config, metadata, files, refs)
    policy = DownloadPolicy.of(config.data_collector, config.orchestration.download_concurrency_limit)
    with progress_bar("collect: downloading", len(new_refs) + len(new_files)) as advance:
        def record(document: Document) -> None:
            metadata.record(document)
            advance()

        import_local_files(new_files, config.path(config.paths.raw), policy.max_bytes, policy.mode, on_result=record)
        await download_documents(new_refs, config.path(config.paths.raw), policy, on_result=record)
    metadata.save()
    documents = [d for d in metadata.values() if d.url in source_urls(files, refs)]
    await _report(documents, skipped=len(refs) + len(files) - len(new_refs) - len(new_files))
    return documents
