"""Stage 2's bookkeeping around the conversions: which downloads it owes, which are done, where they run.

The conversions manifest records each document once it is converted (or failed); a document converted by
another converter version is converted again, a failure stays final until the converter changes. Chunking is
cheap and cached by content, so every converted document is chunked again each run.
"""

from __future__ import annotations

from core import artifacts
from core.artifacts import MissingStageOutput
from core.config import ConfigError, DataProcessor, PipelineConfig
from core.files import atomic_write_json
from tasks.common.records import Conversion, DocumentKind
from tasks.common.store import RecordIndex, metadata_index
from tasks.process.chunk import chunk_documents
from tasks.process.convert import converter_label


def converter_settings(config: PipelineConfig) -> DataProcessor:
    """The section with its models folder resolved against the config's root."""
    p = config.data_processor
    return p.model_copy(update={"artifacts_path": config.path(p.artifacts_path) if p.artifacts_path else None})


def task_runner(config: PipelineConfig):
    """Threads on one machine, or a Dask cluster (``data_processor.task_runner: dask``)."""
    from prefect.task_runners import ThreadPoolTaskRunner

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


def downloaded(config: PipelineConfig) -> tuple[dict[str, str], dict[str, DocumentKind]]:
    """Stage 1's documents on disk: sha256 → the URL it was first found at, and → its kind."""
    raw_dir = config.path(config.paths.raw)
    urls: dict[str, str] = {}
    kinds: dict[str, DocumentKind] = {}
    for document in metadata_index(config).values():
        if document.status == "ok" and document.sha256 \
                and artifacts.raw_document(raw_dir, document.sha256, document.kind).is_file():
            urls.setdefault(document.sha256, document.url)
            kinds[document.sha256] = document.kind
    if not urls:
        raise MissingStageOutput("2", artifacts.raw_document(raw_dir, "*"), "1")
    return urls, kinds


def conversions(config: PipelineConfig) -> RecordIndex[Conversion]:
    return RecordIndex(artifacts.conversions(config.path(config.paths.processed)), Conversion, key="sha256")


def to_convert(config: PipelineConfig, kinds: dict[str, DocumentKind], manifest: RecordIndex[Conversion]) -> list[str]:
    """The documents not yet converted by this converter (a failure by it is final; a lost Markdown file is not)."""
    processed_dir, settings = config.path(config.paths.processed), converter_settings(config)

    def done(sha: str) -> bool:
        previous = manifest.get(sha)
        return (previous is not None and previous.converter == converter_label(settings, kinds[sha])
                and (previous.status == "failed" or artifacts.markdown(processed_dir, sha).is_file()))

    return [sha for sha in kinds if not done(sha)]


def chunk_converted(config: PipelineConfig, urls: dict[str, str], manifest: RecordIndex[Conversion]) -> dict[str, int]:
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
