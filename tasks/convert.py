"""PDF → Markdown with docling, in two configurations that are both real code paths.

``standard`` is docling's full pipeline (layout and table models): the best structure, but
its layout model comes from the Hugging Face hub, so offline it needs ``artifacts_path``
(fetched beforehand with ``docling-tools models download``). ``native`` is docling's
model-free pipeline: it works with no network at all, but emits one paragraph per line and
no headings, so headings are recovered from the PDF itself (see ``tasks.headings``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.clean import clean_markdown
from tasks.download import count_pages
from tasks.files import atomic_write_text
from tasks.headings import escape_hash_lines, recover_headings
from tasks.records import Conversion

if TYPE_CHECKING:
    from docling.document_converter import DocumentConverter, PdfFormatOption


@dataclass(frozen=True)
class ConverterSettings:
    kind: Literal["standard", "native"] = "native"
    artifacts_path: Path | None = None
    do_ocr: bool = False
    do_table_structure: bool = True

    def label(self) -> str:
        return f"docling-{self.kind}"


class ConverterUnavailable(Exception):
    """The converter itself cannot run (missing models, bad artifacts path): every document would fail."""


def format_options(settings: ConverterSettings) -> PdfFormatOption:
    """The docling PDF format option for these settings (kept separate so it can be inspected)."""
    # docling is imported when a document is converted, not when a rerun finds every conversion done
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions
    from docling.document_converter import NativePdfFormatOption, PdfFormatOption

    if settings.kind == "native":
        return NativePdfFormatOption(pipeline_options=NativePdfPipelineOptions(
            generate_page_images=False, generate_picture_images=False, parser_threads=1))
    if settings.artifacts_path is not None and not settings.artifacts_path.is_dir():
        raise ConverterUnavailable(
            f"data_processor.artifacts_path: folder not found: {settings.artifacts_path} "
            "(fetch the models with `docling-tools models download -o <folder>`, or use converter: native)")
    options = PdfPipelineOptions(artifacts_path=settings.artifacts_path, do_ocr=settings.do_ocr,
                                 do_table_structure=settings.do_table_structure)
    return PdfFormatOption(pipeline_options=options)


_local = threading.local()


def _converter(settings: ConverterSettings) -> DocumentConverter:
    """One converter per thread and settings: docling converters are costly to build and not shared across threads."""
    cache = getattr(_local, "converters", None)
    if cache is None:
        cache = _local.converters = {}
    if settings not in cache:
        from docling.datamodel.base_models import InputFormat
        from docling.document_converter import DocumentConverter

        cache[settings] = DocumentConverter(format_options={InputFormat.PDF: format_options(settings)})
    return cache[settings]


@dataclass(frozen=True)
class Converted:
    markdown: str
    pages: int | None
    headings: int
    heading_source: str | None
    seconds: float


def _is_model_missing(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}"
    return any(marker in text for marker in ("LocalEntryNotFound", "huggingface", "hf_hub", "artifacts_path"))


def convert_pdf(pdf_path: Path, settings: ConverterSettings) -> Converted:
    """Convert one PDF; raises the converter's own error for a bad file, ``ConverterUnavailable`` for a bad set-up."""
    started = time.perf_counter()
    try:
        document = _converter(settings).convert(pdf_path).document
    except ConverterUnavailable:
        raise
    except Exception as error:
        if settings.kind == "standard" and _is_model_missing(error):
            raise ConverterUnavailable(
                "docling's layout model is not available offline: set data_processor.artifacts_path to a folder "
                "made by `docling-tools models download`, or use data_processor.converter: native "
                f"({type(error).__name__})") from error
        raise
    markdown = document.export_to_markdown()
    headings, source = 0, None
    if settings.kind == "native":
        markdown = escape_hash_lines(markdown)
        markdown, headings, source = recover_headings(markdown, pdf_path)
    return Converted(markdown, count_pages(pdf_path), headings, source, time.perf_counter() - started)


@task(name="convert-document", cache_policy=NO_CACHE)
def convert_document(pdf_path: Path, out_path: Path, settings: ConverterSettings) -> Conversion:
    """Convert and clean one PDF into ``out_path``; a bad PDF becomes a ``failed`` record, never an exception."""
    sha = pdf_path.stem
    try:
        converted = convert_pdf(pdf_path, settings)
    except ConverterUnavailable:
        raise
    except Exception as error:  # docling raises many types for malformed input; each is recorded, none is fatal
        return Conversion(sha256=sha, status="failed", converter=settings.label(),
                          error=f"{type(error).__name__}: {error}"[:500])
    text = clean_markdown(converted.markdown)
    if not text.strip():
        return Conversion(sha256=sha, status="failed", converter=settings.label(), pages=converted.pages,
                          seconds=converted.seconds,
                          error="no text left after cleaning (a scanned PDF needs converter: standard with do_ocr: true)")
    atomic_write_text(out_path, text)
    return Conversion(sha256=sha, status="ok", converter=settings.label(), pages=converted.pages,
                      headings=converted.headings, heading_source=converted.heading_source,
                      seconds=round(converted.seconds, 3))
