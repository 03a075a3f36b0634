"""Stage 2 — process: convert collected PDFs and web pages to clean Markdown, then chunk them by section."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact
from prefect.futures import as_completed

from core import artifacts
from core.config import PipelineConfig
from core.stages import artifact_key
from flows.threaded import threaded_flow
from tasks.common.records import Conversion, DocumentKind
from tasks.common.store import RecordIndex
from tasks.process.convert import convert_document
from tasks.process.stage import chunk_converted, conversions, converter_settings, downloaded, to_convert
from tasks.report.console import progress_bar, say, say_skipped


def _convert(config: PipelineConfig, todo: list[str], kinds: dict[str, DocumentKind],
             manifest: RecordIndex[Conversion]) -> None:
    """Convert ``todo`` on the flow's task runner, recording each as it finishes."""
    raw_dir, processed_dir = config.path(config.paths.raw), config.path(config.paths.processed)
    settings = converter_settings(config)
    with progress_bar("process: converting", len(todo)) as advance:
        futures = [convert_document.submit(artifacts.raw_document(raw_dir, sha, kinds[sha]),
                                           artifacts.markdown(processed_dir, sha), settings, kinds[sha])
                   for sha in todo]
        for future in as_completed(futures):
            manifest.record(future.result())
            advance()
    manifest.save()


def _report(urls: dict[str, str], converted: list[Conversion], summary: dict[str, int]) -> None:
    say("process: " + ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in summary.items()))
    for conversion in (c for c in converted if c.status == "failed"):
        name = urls[conversion.sha256].rstrip("/").rsplit("/", 1)[-1] or urls[conversion.sha256]
        say_skipped(f"process: skipped {conversion.sha256[:12]} ({name}) at {conversion.step}: {conversion.error}",
                    f"{urls[conversion.sha256]}: {conversion.detail}" if conversion.detail else urls[conversion.sha256])
    create_table_artifact(
        _sync=True,  # see flows.threaded
        key=artifact_key("2"),
        table=[{"sha256": c.sha256[:12], "url": urls[c.sha256], "kind": c.kind, "status": c.status, "pages": c.pages,
                "headings": c.headings, "heading_source": c.heading_source or "", "noise_lines": c.noise_lines,
                "failed_step": c.step or "", "error": c.error or ""}
               for c in converted],
        description="Stage 2: " + ", ".join(f"{key}={value}" for key, value in summary.items()),
    )


@threaded_flow("process")
def process(config: PipelineConfig) -> dict[str, int]:
    urls, kinds = downloaded(config)
    manifest = conversions(config)
    todo = to_convert(config, kinds, manifest)
    _convert(config, todo, kinds, manifest)
    counts = chunk_converted(config, urls, manifest)
    converted = [c for c in (manifest.get(sha) for sha in urls) if c is not None]
    failed = sum(c.status == "failed" for c in converted)
    summary = {"documents": len(urls), "converted": len(converted) - failed, "failed": failed,
               "already_done": len(urls) - len(todo), **counts}
    _report(urls, converted, summary)
    return summary
