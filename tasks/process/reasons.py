"""Why a document could not be used, in one line a user reads: the kind, the step, the cause.

docling's own errors name the content-addressed path (twice), wrap the parser's message in
its own and run to hundreds of characters; shown as they are, they fill the CLI line and widen
the UI's tables, and still do not say what is wrong with the file. The PDF library we already
ship (pdfium) says it better: whether the file opens at all, and which page does not parse.
The full error stays in the manifest (``detail``) and the run log.
"""

from __future__ import annotations

import re
from pathlib import Path

import pypdfium2

from tasks.common.pdfium import open_pdf
from tasks.common.records import DocumentKind

MAX_REASON = 160
_PAGE = re.compile(r"(?:decoding|parse|parsing) page (\d+)", re.IGNORECASE)
_NOISE = re.compile(r"(?:/[^\s:]*)?[0-9a-f]{64}(?:\.[a-z]+)?|key=\S+")  # content-addressed paths and docling's keys


def _pdf_problem(path: Path, error: str) -> str | None:
    """What pdfium finds wrong with a PDF that docling could not convert, or None."""
    try:
        with open_pdf(path) as document:
            pages = len(document)
            for number in range(pages):
                document[number].get_textpage().get_text_range()
    except pypdfium2.PdfiumError as failure:
        cause = re.sub(r"^.*\(PDFium: (.*)\)\.?$", r"\1", str(failure)).lower()
        return f"truncated or damaged PDF: it cannot be opened ({cause})" if "load" in str(failure).lower() \
            else f"damaged PDF: {cause}"
    except OSError as failure:
        return f"the file cannot be read ({failure.strerror})"
    if found := _PAGE.search(error):
        return f"damaged PDF: page {int(found.group(1)) + 1} of {pages} cannot be parsed"
    return None


def _shorten(text: str, limit: int) -> str:
    text = " ".join(_NOISE.sub("the document", text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def short_reason(kind: DocumentKind, step: str, error: BaseException, path: Path) -> str:
    """The document's failure in at most ``MAX_REASON`` characters."""
    detail = f"{type(error).__name__}: {error}"
    if kind == "pdf" and step == "conversion" and (problem := _pdf_problem(path, detail)):
        return _shorten(problem, MAX_REASON)
    what = "PDF" if kind == "pdf" else "web page"
    return _shorten(f"{what}, {step} failed: {detail}", MAX_REASON)
