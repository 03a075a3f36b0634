"""Recover section headings that docling's model-free pipeline does not emit.

Header-based chunking needs headings. The PDF outline (bookmarks) is the most reliable
source: authors' tools write it from the real heading structure. Without an outline we
fall back to numbered-heading lines ("2.1 First Trimester Screening"), which are common in
guides and reports and rare in running text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pypdfium2

_NUMBERED = re.compile(r"^(\d{1,2}(?:\.\d{1,2}){0,3})\.?\s+([A-Z][^\n]{1,90})$")
_SENTENCE_END = re.compile(r"[.,;:!?]$")


def _norm(text: str) -> str:
    return " ".join(text.replace("\u00ad", "").split()).casefold()


def escape_hash_lines(markdown: str) -> str:
    """Native output writes text lines starting with '#' (code, hashtags) unescaped: they are not headings."""
    return re.sub(r"(?m)^(#+)", r"\\\1", markdown)


def outline(pdf_path: Path) -> list[tuple[int, str]]:
    """The PDF's bookmarks as (level starting at 1, title); empty when there is none or the file is unreadable."""
    try:
        document = pypdfium2.PdfDocument(pdf_path)
    except (pypdfium2.PdfiumError, OSError):
        return []
    try:
        return [(item.level + 1, item.get_title().strip()) for item in document.get_toc() if item.get_title().strip()]
    finally:
        document.close()


def _numbered_level(paragraph: str) -> int | None:
    match = _NUMBERED.match(paragraph)
    if not match or _SENTENCE_END.search(paragraph) or len(paragraph.split()) > 12:
        return None
    return match.group(1).count(".") + 1


def recover_headings(markdown: str, pdf_path: Path) -> tuple[str, int, str | None]:
    """Mark headings in native-pipeline Markdown; returns (markdown, count, source: outline|numbered|None)."""
    paragraphs = markdown.split("\n\n")
    expected = outline(pdf_path)
    count = 0
    if expected:
        pending = [(_norm(title), level) for level, title in expected]
        position = 0
        for index, paragraph in enumerate(paragraphs):
            key = _norm(paragraph)
            match = next((i for i in range(position, len(pending)) if pending[i][0] == key), None)
            if match is not None:
                paragraphs[index] = "#" * min(pending[match][1], 6) + " " + paragraph.strip()
                position = match + 1
                count += 1
        if count:
            return "\n\n".join(paragraphs), count, "outline"
    for index, paragraph in enumerate(paragraphs):
        level = _numbered_level(paragraph.strip())
        if level is not None:
            paragraphs[index] = "#" * min(level, 6) + " " + paragraph.strip()
            count += 1
    return "\n\n".join(paragraphs), count, "numbered" if count else None
