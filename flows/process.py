"""Stage 2 — process: convert collected PDFs and web pages to clean Markdown, then chunk them by section."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from core import artifacts
from core.artifacts import MissingStageOutput
from core.config import ConfigError, DataProcessor, PipelineConfig
from core.files import atomic_write_json
from core.stages import artifact_key
from flows.report import progress_bar, say, say_skipped
from flows.threaded import threaded_flow
from tasks.common.records import Conversion, Document, DocumentKind
from tasks.common.store import RecordIndex
from tasks.process.chunk import chunk_documents
from tasks.process.convert import convert_document, converter_label


def converter_settings(config: PipelineConfig) -> DataProcessor:
    """The section with its models folder resolved against the config's root."""
    p = config.data_processor
    return p.model_copy(update={"artifacts_path": config.path(p.artifacts_path) if p.artifacts_path else None})


def task_runner(config: PipelineConfig):
    """Threads on one machine, or a Dask cluster (``data_processor.task_runner: dask``)."""
    p = config.data_processor
    if p.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=p.workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError("data_processor.task_runner: dask needs prefect-dask: EXTRAS='dev dask' scripts/setup.sh "
                          "(or pip install prefect-dask)") from None
    if p.dask_address:
        return DaskTaskRunner(address=p.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": p.workers, "threads_per_worker": 1})


def _downloaded(config: PipelineConfig) -> tuple[dict[str, str], dict[str, DocumentKind]]:
    """Stage 1's documents on disk: sha256 → the URL it was first found at, and → its kind."""
    raw_dir = config.path(config.paths.raw)
    urls: dict[str, str] = {}
    kinds: dict[str, DocumentKind] = {}
    for document in RecordIndex(artifacts.path(config, "metadata"), Document, key="url").values():
        if document.status == "ok" and document.sha256 \
                and artifacts.raw_document(raw_dir, document.sha256, document.kind).is_file():
            urls.setdefault(document.sha256, document.url)
            kinds[document.sha256] = document.kind
    if not urls:
        raise MissingStageOutput("2", artifacts.raw_document(raw_dir, "*"), "1")
    return urls, kinds


def _convert(config: PipelineConfig, todo: list[str], kinds: dict[str, DocumentKind],
             manifest: RecordIndex[Conversion]) -> None:
    """Convert ``todo`` in parallel (the flow's task runner), recording each as it finishes."""
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


def _chunk(config: PipelineConfig, urls: dict[str, str], manifest: RecordIndex[Conversion]) -> dict[str, int]:
    """Chunk every converted document again (cached by content: a chunking failure is not final); write chunks.json."""
    processed_dir = config.path(config.paths.processed)
    markdown = [c for c in (manifest.get(sha) for sha in urls) if c is not None
                and (c.status == "ok" or c.step == "chunking") and artifacts.markdown(processed_dir, c.sha256).is_file()]
    chunks, counts, chunk_failures = chunk_documents.with_options(result_storage=config.result_storage())(
        [(c.sha256, artifacts.markdown(processed_dir, c.sha256), urls[c.sha256]) for c in markdown],
        config.finetuning.base_model, config.finetuning.base_model_gguf,
        config.data_processor.min_tokens, config.data_processor.max_tokens)
    for conversion in markdown:
        error = chunk_failures.get(conversion.sha256)
        manifest.record(conversion.model_copy(update={"status": "failed" if error else "ok",
                                                      "step": "chunking" if error else None, "error": error}))
    manifest.save()
    atomic_write_json(artifacts.path(config, "chunks"), [c.model_dump(mode="json") for c in chunks])
    return counts


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
    processed_dir, settings = config.path(config.paths.processed), converter_settings(config)
    urls, kinds = _downloaded(config)
    manifest = RecordIndex(artifacts.conversions(processed_dir), Conversion, key="sha256")

    def is_done(sha: str) -> bool:
        previous = manifest.get(sha)
        return (previous is not None and previous.converter == converter_label(settings, kinds[sha])
                and (previous.status == "failed" or artifacts.markdown(processed_dir, sha).is_file()))

    todo = [sha for sha in urls if not is_done(sha)]
    _convert(config, todo, kinds, manifest)
    counts = _chunk(config, urls, manifest)
    converted = [c for c in (manifest.get(sha) for sha in urls) if c is not None]
    failed = sum(c.status == "failed" for c in converted)
    summary = {"documents": len(urls), "converted": len(converted) - failed, "failed": failed,
               "already_done": len(urls) - len(todo), **counts}
    _report(urls, converted, summary)
    return summary
