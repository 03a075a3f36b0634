"""Stage 1 — collect: find documents (SerpAPI or local), download them, record every outcome."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prefect import flow
from prefect.artifacts import acreate_table_artifact
from pydantic import SecretStr

from core import artifacts
from core.config import ConfigError, PipelineConfig, Secrets
from core.stages import artifact_key
from flows.report import progress_bar, say
from tasks.collect.download import DownloadPolicy, download_documents, import_local_files, is_settled
from tasks.collect.search import list_local_sources, search_serpapi
from tasks.common.records import Document, SourceRef
from tasks.common.store import RecordIndex


def serpapi_key() -> SecretStr:
    return Secrets().require("serp_api_key", "data_collector.source: serpapi",
                             "use data_collector.source: local (a folder of documents or a URL list)")


def preflight(config: PipelineConfig) -> None:
    """Fail before any work when stage 1 cannot run: a missing key or a missing local source."""
    c = config.data_collector
    if c.source == "serpapi":
        serpapi_key()
        return
    for key, value in (("dir", c.local.dir), ("url_file", c.local.url_file)):
        if value is not None and not config.path(value).exists():
            raise ConfigError(f"data_collector.local.{key}: not found: {config.path(value)}"
                              + (" (run scripts/setup.sh to render the sample corpus)" if key == "dir" else ""))


def _sources(config: PipelineConfig) -> tuple[list[Path], list[SourceRef]]:
    """Local files, and the URLs to fetch (search results, or the URL list)."""
    c = config.data_collector
    if c.source == "serpapi":
        return [], search_serpapi(c.search_query, serpapi_key(), c.num_results, c.results_per_page, c.mode,
                                  c.serpapi_endpoint)
    return list_local_sources(config.path(c.local.dir) if c.local.dir else None,
                              config.path(c.local.url_file) if c.local.url_file else None, c.mode)


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
    raw_dir = config.path(config.paths.raw)
    metadata = RecordIndex(artifacts.path(config, "metadata"), Document, key="url")
    files, refs = _sources(config)

    def done(url: str) -> bool:
        previous = metadata.get(url)
        return previous is not None and is_settled(previous, raw_dir)

    new_refs = [ref for ref in refs if not done(ref.url)]
    new_files = [path for path in files if not done(path.resolve().as_uri())]
    policy = DownloadPolicy.of(config.data_collector, config.orchestration.download_concurrency_limit)
    with progress_bar("collect: downloading", len(new_refs) + len(new_files)) as advance:
        def record(document: Document) -> None:
            metadata.record(document)
            advance()

        import_local_files(new_files, raw_dir, policy.max_bytes, policy.mode, on_result=record)
        await download_documents(new_refs, raw_dir, policy, on_result=record)
    metadata.save()
    wanted = {ref.url for ref in refs} | {path.resolve().as_uri() for path in files}
    documents = [d for d in metadata.values() if d.url in wanted]
    await _report(documents, skipped=len(refs) + len(files) - len(new_refs) - len(new_files))
    return documents
