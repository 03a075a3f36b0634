"""The text lines of a converted PDF, with where they stand on the page and in which font.

docling's model-free pipeline gives one text item per PDF line with its bounding box.
Headings and page furniture (running headers, page numbers) are recognised by position
and typography, which Markdown has lost, so stage 2 works on these lines and renders
Markdown only at the end. Font size and weight come from pdfium's text layer, looked up
at each line's first characters (a few calls per line, not per character).
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pypdfium2
import pypdfium2.raw as pdfium_c

from tasks.common.pdfium import open_pdf

if TYPE_CHECKING:
    from docling_core.types.doc import DoclingDocument

_BOLD_FONT = re.compile(r"bold|black|heavy|semibold|demi|[-,+]bd|cmbx|cmb\d|bx\d|sbx", re.IGNORECASE)


@dataclass(frozen=True)
class Line:
    text: str
    page: int            # 1-based
    top: float           # points from the top of the page to the line's top
    height: float        # of the line's box, points
    left: float          # points from the left edge
    bottom_pdf: float    # the box's bottom in PDF coordinates (origin bottom-left), for pdfium look-ups
    size: float = 0.0    # font size in points; 0 when the text layer does not say
    bold: bool = False
    heading: int = 0     # heading level once recognised; 0 for body text


def document_lines(document: DoclingDocument) -> list[Line]:
    """Every text item of a docling document as a line, in docling's reading order."""
    lines: list[Line] = []
    for item in document.texts:
        text = " ".join(item.text.split())
        if not text or not item.prov:
            continue
        prov = item.prov[0]
        page_height = document.pages[prov.page_no].size.height
        box = prov.bbox.to_bottom_left_origin(page_height)
        lines.append(Line(text=text, page=prov.page_no, top=round(page_height - box.t, 2), height=round(box.t - box.b, 2),
                          left=round(box.l, 2), bottom_pdf=box.b))
    return lines


def _font_at(textpage: pypdfium2.PdfTextPage, x: float, y: float, tolerance: float) -> tuple[float, bool] | None:
    index = pdfium_c.FPDFText_GetCharIndexAtPos(textpage.raw, x, y, tolerance, tolerance)
    if index < 0:
        return None
    size = pdfium_c.FPDFText_GetFontSize(textpage.raw, index)
    weight = pdfium_c.FPDFText_GetFontWeight(textpage.raw, index)
    buffer = ctypes.create_string_buffer(128)
    flags = ctypes.c_int(0)
    length = pdfium_c.FPDFText_GetFontInfo(textpage.raw, index, buffer, len(buffer), ctypes.byref(flags))
    name = buffer.raw[: max(0, length - 1)].decode("latin-1", "replace")
    return round(size, 1), weight >= 600 or bool(_BOLD_FONT.search(name))


def with_fonts(lines: list[Line], pdf_path: Path) -> list[Line]:
    """The same lines with font size and boldness from the PDF's text layer (unchanged where it has none)."""
    by_page: dict[int, list[int]] = {}
    for index, line in enumerate(lines):
        by_page.setdefault(line.page, []).append(index)
    result = list(lines)
    with open_pdf(pdf_path) as document:
        for page_no, indices in by_page.items():
            if page_no > len(document):
                continue
            page = document[page_no - 1]
            textpage = page.get_textpage()
            try:
                for index in indices:
                    line = lines[index]
                    y = line.bottom_pdf + line.height / 2
                    font = (_font_at(textpage, line.left + 2, y, 3.0) or _font_at(textpage, line.left + 8, y, 5.0))
                    if font is not None:
                        result[index] = replace(line, size=font[0], bold=font[1])
            finally:
                textpage.close()
                page.close()
    return result
