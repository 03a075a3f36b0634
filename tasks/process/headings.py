"""Recover section headings that docling's model-free pipeline does not emit.

Header-based chunking needs headings, and real PDFs rarely print an outline title exactly
as a line of its own: numbering differs ("9.3.41.31 set line cap" for "set line cap"), a
title wraps onto the next line or runs into the paragraph after it, ligatures and
hyphenation change its letters. So the outline (bookmarks) is placed by its destinations
(the page and height each entry points at), and its title is looked for only near that
point, tolerantly; where no line there matches, the heading is inserted at the
destination itself. Without an outline, headings are found from the text layer's
typography (font size and weight against the body text) and numbered heading lines.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pypdfium2

from tasks.common.pdfium import open_pdf
from tasks.process.layout import Line

_NUMBERING = re.compile(
    r"^(?:(?:chapter|section|appendix|part|annex)\s+)?(?:[0-9]{1,3}|[ivxlcdm]{1,6}|[a-z])(?:[.\-][0-9]{1,3})*[.:)]?\s+"
    r"|^(?:chapter|section|appendix|part|annex)\s+(?:[0-9]{1,3}|[ivxlcdm]{1,6}|[a-z])[.:]?$",
    re.IGNORECASE)
_NUMBERED = re.compile(r"^(\d{1,2}(?:\.\d{1,2}){0,3})\.?\s+([A-Z][^\n]{1,90})$")
_SENTENCE_END = re.compile(r"[.,;:!?]$")
_CHAPTER_LABEL = re.compile(r"^(?:chapter|appendix|part)\s+(?:[0-9]{1,3}|[ivxlcdm]{1,6}|[a-z])\.?$", re.IGNORECASE)
_NON_WORD = re.compile(r"[\W_]+")
_DOT_LEADERS = re.compile(r"(?:\.\s?){4,}")
WINDOW_BEFORE, WINDOW_AFTER = 3, 8   # lines around an outline destination where its title is looked for
MAX_TITLE_LINES = 3


@dataclass(frozen=True)
class OutlineEntry:
    level: int                 # 1 = top
    title: str
    page: int                  # 1-based
    top: float | None = None   # points from the top of the page; None for a whole-page destination


def read_outline(pdf_path: Path) -> list[OutlineEntry]:
    """The PDF's bookmarks that point somewhere in it, with their destinations; empty when none or unreadable."""
    try:
        with open_pdf(pdf_path) as document:
            return _outline(document)
    except (pypdfium2.PdfiumError, OSError):
        return []


def _outline(document: pypdfium2.PdfDocument) -> list[OutlineEntry]:
    entries = []
    for item in document.get_toc(max_depth=32):
        title = " ".join(item.get_title().split())
        if not title:
            continue
        dest = item.get_dest()
        index = dest.get_index() if dest is not None else None
        if index is None or not 0 <= index < len(document):
            continue  # a bookmark with no destination cannot place a heading
        top = None
        mode, view = dest.get_view()
        if mode == 1 and len(view) >= 2 and view[1]:  # XYZ: (left, top, zoom) in PDF coordinates
            top = max(0.0, document[index].get_height() - view[1])
        entries.append(OutlineEntry(item.level + 1, title, index + 1, top))
    return entries


def escape_hash_lines(markdown: str) -> str:
    """Text lines starting with '#' (code, hashtags) are not headings."""
    return re.sub(r"(?m)^(#+)", r"\\\1", markdown)


def title_key(text: str) -> str:
    """A title reduced to what survives typesetting: no numbering, case, ligatures, hyphenation, spacing or punctuation."""
    text = unicodedata.normalize("NFKC", text).replace("\u00ad", "")
    text = re.sub(r"(\w)-\s+(\w)", r"\1\2", text)
    text = _NUMBERING.sub("", text.strip(), count=1)
    return _NON_WORD.sub("", text.casefold())


def _prefix_end(text: str, key: str) -> int | None:
    """Where in ``text`` the part whose key is ``key`` ends (for a title run into the paragraph after it)."""
    for end in range(1, len(text) + 1):
        if end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
            continue  # never cut inside a word
        prefix = title_key(text[:end])
        if prefix == key:
            return end
        if len(prefix) > len(key):
            return None
    return None


@dataclass(frozen=True)
class _Match:
    start: int
    span: int               # lines that make up the title
    rest: str | None = None  # text after the title on its last line (a title run into the paragraph)


def _match_at(lines: list[Line], start: int, key: str) -> _Match | None:
    text = ""
    for span in range(1, MAX_TITLE_LINES + 1):
        if start + span > len(lines) or (span > 1 and lines[start + span - 1].page != lines[start].page):
            return None
        text = f"{text} {lines[start + span - 1].text}".strip()
        if _DOT_LEADERS.search(text):
            return None  # a table-of-contents line names the title but is not the heading
        line_key = title_key(text)
        if line_key == key:
            return _Match(start, span)
        if line_key.startswith(key) and len(key) >= 4:
            end = _prefix_end(text, key)
            if end is not None:
                rest = text[end:].lstrip(" .:—–-")
                return _Match(start, span, rest or None)
            return None
        if not key.startswith(line_key) or not line_key:
            return None
    return None


def _anchor(lines: list[Line], entry: OutlineEntry, floor: int) -> int:
    """The first line at or after the entry's destination (not before an earlier entry's heading)."""
    for index in range(floor, len(lines)):
        line = lines[index]
        if line.page > entry.page or (line.page == entry.page and (entry.top is None or line.top >= entry.top - 4)):
            return index
    return len(lines)


def place_outline(lines: list[Line], outline: list[OutlineEntry]) -> tuple[list[Line], int]:
    """Lines with the outline's headings marked (or inserted at their destinations); returns how many were matched in the text."""
    result = list(lines)
    matched = 0
    floor = 0
    for entry in outline:
        anchor = _anchor(result, entry, floor)
        key = title_key(entry.title)
        found = None
        if key:
            low = max(floor, anchor - WINDOW_BEFORE)
            high = len(result) if entry.top is None else min(len(result), anchor + WINDOW_AFTER)
            candidates = [i for i in range(low, high) if not result[i].heading
                          and (entry.top is not None or result[i].page == entry.page)]
            for index in sorted(candidates, key=lambda i: abs(i - anchor)):
                found = _match_at(result, index, key)
                if found is not None:
                    break
        if found is None:
            near = result[anchor] if anchor < len(result) else (result[-1] if result else None)
            if near is None:
                continue
            result.insert(anchor, replace(near, text=entry.title, heading=min(entry.level, 6)))
            floor = anchor + 1
            continue
        matched += 1
        first = result[found.start]
        title_lines = result[found.start:found.start + found.span]
        title = " ".join(line.text for line in title_lines)
        if found.rest is not None:
            title = title[: len(title) - len(found.rest)].rstrip(" .:—–-")
        label_index = found.start - 1
        if label_index >= floor and _CHAPTER_LABEL.match(result[label_index].text) and result[label_index].page == first.page:
            title = f"{result[label_index].text} {title}"  # "Chapter 3" printed on the line above its title
            del result[label_index]
            found = replace(found, start=found.start - 1)
        replacement = [replace(first, text=title, heading=min(entry.level, 6))]
        if found.rest:
            last = title_lines[-1]
            replacement.append(replace(last, text=found.rest))
        result[found.start:found.start + found.span] = replacement
        floor = found.start + 1
    return result, matched


def numbered_level(text: str) -> int | None:
    """Depth of a numbered heading line ("2.1 First Trimester Screening" → 2), None for running text."""
    match = _NUMBERED.match(text)
    if not match or _SENTENCE_END.search(text) or len(text.split()) > 12 or _DOT_LEADERS.search(text):
        return None
    return match.group(1).count(".") + 1


def _looks_like_title(text: str) -> bool:
    words = text.split()
    return (1 <= len(words) <= 14 and len(text) <= 100 and any(c.isalpha() for c in text)
            and not _SENTENCE_END.search(text) and not _DOT_LEADERS.search(text)
            and (text[0].isupper() or text[0].isdigit()))


def body_size(lines: list[Line]) -> float:
    """The font size most of the text is set in (weighted by characters)."""
    sizes: Counter[float] = Counter()
    for line in lines:
        if line.size:
            sizes[line.size] += len(line.text)
    return sizes.most_common(1)[0][0] if sizes else 0.0


def detect_by_typography(lines: list[Line]) -> tuple[list[Line], int, str | None]:
    """Mark headings from font size and weight (against the body size) and numbering; returns (lines, count, source)."""
    body = body_size(lines)
    candidates: dict[int, tuple[float, bool]] = {}
    for index, line in enumerate(lines):
        if not _looks_like_title(line.text):
            continue
        larger = body and line.size >= body * 1.12
        bold_alone = body and line.bold and line.size >= body * 0.95 and not (
            index > 0 and lines[index - 1].bold and lines[index - 1].page == line.page
            and not _looks_like_title(lines[index - 1].text))
        if larger or (bold_alone and (numbered_level(line.text) or len(line.text.split()) <= 8)):
            candidates[index] = (line.size, line.bold)
    if not body or not candidates:
        return _numbered_only(lines)
    styles = sorted({style for style in candidates.values()}, key=lambda s: (-s[0], not s[1]))
    total = max(1, len(lines))
    # a style used by a large share of the lines is emphasis in running text (or a code font), not a heading level
    counts = Counter(candidates.values())
    styles = [s for s in styles if counts[s] / total <= 0.15][:5]
    level_of = {style: level for level, style in enumerate(styles, start=1)}
    result: list[Line] = []
    count = 0
    for index, line in enumerate(lines):
        style = candidates.get(index)
        if style in level_of:
            level = numbered_level(line.text) or level_of[style]
            previous = result[-1] if result else None
            if (previous is not None and previous.heading and index - 1 in candidates
                    and candidates[index - 1] == style and previous.page == line.page):
                result[-1] = replace(previous, text=f"{previous.text} {line.text}")  # a title wrapped onto two lines
                continue
            result.append(replace(line, heading=min(level, 6)))
            count += 1
        else:
            result.append(line)
    return result, count, "typography"


def _numbered_only(lines: list[Line]) -> tuple[list[Line], int, str | None]:
    result, count = [], 0
    for line in lines:
        level = numbered_level(line.text)
        result.append(replace(line, heading=min(level, 6)) if level else line)
        count += level is not None
    return result, count, "numbered" if count else None


def recover_headings(lines: list[Line], outline: list[OutlineEntry]) -> tuple[list[Line], int, str | None]:
    """Headings for native-pipeline lines: (lines, headings, source: outline|typography|numbered|None)."""
    if outline:
        marked, _matched = place_outline(lines, outline)
        return marked, len(outline), "outline"
    return detect_by_typography(lines)


def render_markdown(lines: list[Line]) -> str:
    """One block per line (as docling's native export), headings as '#' lines; '#' at a line start is escaped."""
    blocks = []
    for line in lines:
        if line.heading:
            blocks.append("#" * line.heading + " " + line.text)
        else:
            blocks.append(escape_hash_lines(line.text))
    return "\n\n".join(blocks)
