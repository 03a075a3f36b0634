"""Render the project's sample Markdown texts into PDFs for the offline local profile.

Real PDFs carry the noise stage 2 must remove (running headers, page-number footers, a
table of contents with dot leaders, image placeholders, photo credits) and an outline
(bookmarks) from which headings are recovered. We generate them at set-up time instead of
committing binaries, so the corpus is reviewable text and always matches the code.

Usage: python -m tasks.collect.sample_corpus SRC_DIR OUT_DIR
"""

from __future__ import annotations

import io
import re
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import yaml
from fpdf import FPDF
from fpdf.outline import OutlineSection
from PIL import Image

from core.files import atomic_write_bytes

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_IMAGE = re.compile(r"^!\[(.*?)\]\((.*?)\)$")


def _split_front_matter(text: str) -> tuple[dict, str]:
    if not text.startswith("---\n"):
        return {}, text
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head) or {}, body


def _placeholder_png() -> io.BytesIO:
    """A small grey picture standing in for the document's figure."""
    buffer = io.BytesIO()
    Image.new("RGB", (120, 60), (190, 190, 190)).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def _render_toc(pdf: FPDF, outline: list[OutlineSection]) -> None:
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, "Contents", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 11)
    for section in outline:
        indent = "    " * section.level
        label = f"{indent}{section.name}"
        page = str(section.page_number)
        dots = "." * max(3, int((pdf.epw - pdf.get_string_width(label + page)) / pdf.get_string_width(".")) - 2)
        pdf.cell(0, 7, f"{label} {dots} {page}", new_x="LMARGIN", new_y="NEXT")


class _GuidePdf(FPDF):
    def __init__(self, series: str) -> None:
        super().__init__()
        self.series = series

    def header(self) -> None:
        self.set_font("Helvetica", "I", 9)
        self.cell(0, 8, self.series, align="R", new_x="LMARGIN", new_y="NEXT")
        self.ln(2)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", "", 9)
        self.cell(0, 10, str(self.page_no()), align="C")


_PUBLISHED = date(2024, 1, 1)  # the creation date of a document whose front matter gives none


def render_pdf(markdown: str) -> bytes:
    """Render one sample Markdown document (front matter: title, author, credit, date) to PDF bytes.

    The same text gives the same bytes on every machine: the creation date comes from the front matter (fpdf2
    would stamp the clock), and the file identifier is a hash of the content and that date. The document's
    sha256 is its identity downstream (the split, the caches), so every clone gets the same split and scores.
    """
    meta, body = _split_front_matter(markdown)
    pdf = _GuidePdf(meta.get("author", "Sample corpus"))
    published = meta.get("date", _PUBLISHED)
    pdf.set_creation_date(datetime(published.year, published.month, published.day, tzinfo=UTC))
    pdf.set_title(meta.get("title", "Untitled"))
    pdf.set_author(meta.get("author", ""))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 20)
    pdf.multi_cell(0, 12, meta.get("title", "Untitled"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.insert_toc_placeholder(_render_toc, allow_extra_pages=True)
    pdf.add_page()
    for block in (b.strip() for b in body.split("\n\n")):
        if not block:
            continue
        if heading := _HEADING.match(block):
            level = len(heading.group(1)) - 1
            pdf.start_section(heading.group(2), level=level)
            pdf.set_font("Helvetica", "B", 16 - 2 * level)
            pdf.ln(3)
            pdf.multi_cell(0, 9, heading.group(2), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        elif image := _IMAGE.match(block):
            pdf.image(_placeholder_png(), w=60, alt_text=image.group(1))
            pdf.set_font("Helvetica", "I", 9)
            pdf.multi_cell(0, 5, meta.get("credit", "Photo credit: unknown"), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        else:
            pdf.set_font("Helvetica", "", 11)
            pdf.multi_cell(0, 6, " ".join(block.split()), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
    return bytes(pdf.output())


def build_corpus(src_dir: Path, out_dir: Path) -> list[Path]:
    """Render every ``*.md`` in ``src_dir`` to ``out_dir/<stem>.pdf``; outputs newer than text and renderer are kept."""
    sources = sorted(src_dir.glob("*.md"))
    if not sources:
        raise FileNotFoundError(f"no *.md files in {src_dir}")
    renderer_mtime = Path(__file__).stat().st_mtime
    written = []
    for source in sources:
        target = out_dir / f"{source.stem}.pdf"
        if not target.exists() or target.stat().st_mtime < max(source.stat().st_mtime, renderer_mtime):
            atomic_write_bytes(target, render_pdf(source.read_text(encoding="utf-8")))
        written.append(target)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tasks.collect.sample_corpus SRC_DIR OUT_DIR")
    for path in build_corpus(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)
