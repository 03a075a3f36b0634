"""PDF or web page → Markdown with docling; PDFs in two configurations that are both real code paths.

``standard`` is docling's full pipeline (layout and table models): the best structure, but
its layout model comes from the Hugging Face hub, so offline it needs ``artifacts_path``
(fetched beforehand with ``docling-tools models download``). ``native`` is docling's
model-free pipeline: it works with no network at all, but emits one paragraph per line and
no headings, so headings are recovered from the PDF itself (see ``tasks.process.headings``) and page
furniture is removed by position (``tasks.process.clean``) before the lines become Markdown.

A web page goes through docling's HTML backend once its main content is cut out
(``tasks.process.webpage``): its sections are its own ``<h1>``–``<h6>``.

A document goes through named steps (conversion, headings, cleaning; chunking follows in
``tasks.process.chunk``). A failure in any of them fails that document only, and the manifest says
which step failed and why.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from core.config import DataProcessor
from core.files import atomic_write_text
from tasks.common.records import Conversion, DocumentKind
from tasks.process.clean import clean_markdown, drop_page_furniture
from tasks.process.headings import read_outline, recover_headings, render_markdown
from tasks.process.layout import document_lines, with_fonts
from tasks.process.reasons import short_reason
from tasks.process.webpage import main_content, redirect_target

if TYPE_CHECKING:
    from docling.document_converter import DocumentConverter, PdfFormatOption


RULES_VERSION = 3  # bump when heading recovery, main-content rules or cleaning change what a conversion produces
MIN_PAGE_WORDS = 20  # fewer words of main content: a redirect, a login wall or an empty page, not a document


def converter_label(settings: DataProcessor, kind: DocumentKind = "pdf") -> str:
    """Recorded in the manifest: a document converted under another label (or older rules) is converted again."""
    return f"docling-{settings.converter if kind == 'pdf' else kind}/rules-{RULES_VERSION}"


class ConverterUnavailable(Exception):
    """The converter itself cannot run (missing models, bad artifacts path): every document would fail."""


class StepFailed(Exception):
    """One step failed for one document; the others go on."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.step, self.error = step, error


def run_step(step: str, timings: dict[str, float], function, *args):
    """Call ``function`` as the named step, adding its time to ``timings[step]``.

    Its failure becomes ``StepFailed`` (a set-up error, ``ConverterUnavailable``, still stops the stage).
    """
    started = time.perf_counter()
    try:
        return function(*args)
    except (ConverterUnavailable, StepFailed):
        raise
    except Exception as error:  # docling and pdfium raise many types for malformed input; each is recorded, none is fatal
        raise StepFailed(step, error) from error
    finally:
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - started


def format_options(settings: DataProcessor) -> PdfFormatOption:
    """The docling PDF format option for these settings (kept separate so it can be inspected)."""
    # docling is imported when a document is converted, not when a rerun finds every conversion done
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions
    from docling.document_converter import NativePdfFormatOption, PdfFormatOption

    if settings.converter == "native":
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


def _converter(settings: DataProcessor) -> DocumentConverter:
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
    noise_lines: int
    timings: dict[str, float]  # seconds per step

    @property
    def seconds(self) -> float:
        return sum(self.timings.values())


def _is_model_missing(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}"
    return any(marker in text for marker in ("LocalEntryNotFound", "huggingface", "hf_hub", "artifacts_path"))


def docling_document(pdf_path: Path, settings: DataProcessor):
    """docling's document for one PDF; ``ConverterUnavailable`` when the converter itself cannot run."""
    try:
        return _converter(settings).convert(pdf_path).document
    except ConverterUnavailable:
        raise
    except Exception as error:
        if settings.converter == "standard" and _is_model_missing(error):
            raise ConverterUnavailable(
                "docling's layout model is not available offline: set data_processor.artifacts_path to a folder "
                "made by `docling-tools models download`, or use data_processor.converter: native "
                f"({type(error).__name__})") from error
        raise


def find_headings(lines, pdf_path: Path, use_outline: bool = True):
    """The outline placed by its destinations; without one, typography (font size and weight) and numbering."""
    outline = read_outline(pdf_path) if use_outline else []
    return recover_headings(lines if outline else with_fonts(lines, pdf_path), outline)


def convert_pdf(pdf_path: Path, settings: DataProcessor, use_outline: bool = True) -> Converted:
    """Convert one PDF to cleaned Markdown; raises ``StepFailed`` naming the step, ``ConverterUnavailable`` for a bad set-up.

    ``use_outline=False`` ignores the PDF's bookmarks (how the benchmark scores typography alone against them).
    """
    timings: dict[str, float] = {}
    document = run_step("conversion", timings, docling_document, pdf_path, settings)
    if settings.converter != "native":  # the layout model labels headings and page furniture itself
        markdown = run_step("conversion", timings, document.export_to_markdown)
        headings = sum(line.startswith("#") for line in markdown.splitlines())
        text = run_step("cleaning", timings, clean_markdown, markdown)
        return Converted(text, document.num_pages(), headings, "layout-model", 0, timings)
    lines = run_step("conversion", timings, document_lines, document)
    lines, furniture = run_step("cleaning", timings, drop_page_furniture, lines)
    lines, headings, source = run_step("headings", timings, find_headings, lines, pdf_path, use_outline)
    text = run_step("cleaning", timings, lambda: clean_markdown(render_markdown(lines)))
    return Converted(text, document.num_pages(), headings, source,
                     furniture.running + furniture.page_numbers + furniture.figure_text, timings)


def convert_html(html_path: Path, settings: DataProcessor) -> Converted:
    """Convert one web page to cleaned Markdown: its main content through docling's HTML backend."""
    from docling.datamodel.base_models import DocumentStream
    from docling_core.types.doc import ContentLayer

    timings: dict[str, float] = {}
    content = run_step("conversion", timings, main_content, html_path.read_bytes())
    page = DocumentStream(name=f"{html_path.stem}.html", stream=io.BytesIO(content))
    document = run_step("conversion", timings, lambda: _converter(settings).convert(page).document)
    markdown = run_step("conversion", timings, lambda: document.export_to_markdown(
        included_content_layers={ContentLayer.BODY, ContentLayer.FURNITURE}))  # text before the <h1> too
    text = run_step("cleaning", timings, clean_markdown, markdown)
    headings = sum(block.startswith("#") for block in text.split("\n\n"))
    return Converted(text, 1, headings, "html", 0, timings)


def _too_little(converted: Converted, path: Path, kind: DocumentKind) -> str | None:
    """Why a conversion holds no document worth chunking, or None."""
    if kind == "pdf":
        return None if converted.markdown.strip() else \
            "no text left after cleaning (a scanned PDF needs converter: standard with do_ocr: true)"
    words = len(converted.markdown.split())
    if words >= MIN_PAGE_WORDS:
        return None
    target = redirect_target(path.read_bytes())
    if target is not None:
        return f"only a redirect (to {target or 'an unnamed page'}): collect the page it points to"
    return f"{words} words of main content: a login wall, an empty page or a page built by scripts"


@task(name="convert-document", cache_policy=NO_CACHE)
def convert_document(path: Path, out_path: Path, settings: DataProcessor, kind: DocumentKind = "pdf") -> Conversion:
    """Convert and clean one document into ``out_path``; a failing step becomes a ``failed`` record, never an exception."""
    sha, label = path.stem, converter_label(settings, kind)
    try:
        converted = convert_pdf(path, settings) if kind == "pdf" else convert_html(path, settings)
    except StepFailed as failure:
        return Conversion(sha256=sha, status="failed", kind=kind, converter=label, step=failure.step,
                          error=short_reason(kind, failure.step, failure.error, path), detail=str(failure)[:2000])
    text = converted.markdown
    reason = _too_little(converted, path, kind)
    if reason:
        return Conversion(sha256=sha, status="failed", kind=kind, converter=label, pages=converted.pages,
                          seconds=converted.seconds, step="cleaning", error=reason)
    atomic_write_text(out_path, text)
    return Conversion(sha256=sha, status="ok", kind=kind, converter=label, pages=converted.pages,
                      headings=converted.headings, heading_source=converted.heading_source,
                      noise_lines=converted.noise_lines, seconds=round(converted.seconds, 3))
