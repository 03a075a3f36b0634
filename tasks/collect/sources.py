"""Where stage 1's documents come from (SerpAPI, or a folder and a URL list), checked before any work, and which
of them are still owed: a source settled on an earlier run (fetched, or failed for good) is not fetched again."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from core.config import ConfigError, PipelineConfig, Secrets
from tasks.collect.download import is_settled
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


def sources(config: PipelineConfig) -> tuple[list[Path], list[SourceRef]]:
    """Local files, and the URLs to fetch (search results, or the URL list)."""
    c = config.data_collector
    if c.source == "serpapi":
        return [], search_serpapi(c.search_query, serpapi_key(), c.num_results, c.results_per_page, c.mode,
                                  c.serpapi_endpoint)
    return list_local_sources(config.path(c.local.dir) if c.local.dir else None,
                              config.path(c.local.url_file) if c.local.url_file else None, c.mode)


def unsettled(config: PipelineConfig, metadata: RecordIndex[Document], files: list[Path],
              refs: list[SourceRef]) -> tuple[list[Path], list[SourceRef]]:
    """The files and URLs no earlier run settled."""
    raw_dir = config.path(config.paths.raw)

    def done(url: str) -> bool:
        previous = metadata.get(url)
        return previous is not None and is_settled(previous, raw_dir)

    return [path for path in files if not done(path.resolve().as_uri())], [ref for ref in refs if not done(ref.url)]


def source_urls(files: list[Path], refs: list[SourceRef]) -> set[str]:
    """How metadata.json names each source: a file by its file:// URI."""
    return {ref.url for ref in refs} | {path.resolve().as_uri() for path in files}
