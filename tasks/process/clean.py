"""Remove what PDFs and web pages add to the text that is not content, so chunks and QA pairs stay on topic.

Two kinds of rules. Page furniture (running headers and footers, page numbers, table of
contents and index pages) is recognised on the converted lines while their place on the
page is still known: a header is a line at the top or bottom of many pages, which text
alone cannot tell from a repeated code line. Text rules then work on Markdown blocks
(paragraphs separated by blank lines), in a fixed order: drop noise blocks while each PDF
line is still its own block, re-join wrapped lines into paragraphs, drop empty sections.
A code block or a table keeps its lines (they are its structure); links keep their text.
"""

from __future__ import annotations

import html
import itertools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from tasks.process.layout import Line

_IMAGE = re.compile(r"<!--\s*image\s*-->|!\[[^\]]*\]\([^)]*\)")
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?(?:\d{1,4}|[ivxlc]{1,7})(?:\s*(?:/|of)\s*\d{1,4})?$", re.IGNORECASE)
_DOT_LEADER = re.compile(r"(?:\.\s?){4,}\s*(?:\d{1,4}|[ivxlc]{1,7})(?:\s*[,–-]\s*\d{1,4})*$|(?:…\s*)+\d{1,4}$|(?:\.\s?){6,}")
_PAGE_LIST = re.compile(r"^[^\d.!?;:]{1,60}?,\s*\d{1,4}(?:\s*[,–-]\s*\d{1,4})*$")  # index: "intersections, 34, 144"
_NUMBER = re.compile(r"^[-+−]?\d+(?:[.,]\d+)?%?$")
_TOC_LINE_MAX = 200  # characters: the longest line taken for a TOC or index line
_TOC_TITLE = re.compile(r"^(?:table of )?contents$|^(?:index|list of (?:figures|tables))$", re.IGNORECASE)
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                            "\ufb05": "st", "\ufb06": "st", "\u00ad": None})
_CREDIT = re.compile(
    r"^(?:(?:(?:photo(?:graph)?|image|picture|illustration)s?(?:\s+credits?)?|credits?|source)\s*[:\-–—]\s*\S"
    r"|(?:(?:photo|image|picture)s?\s+)?courtesy(?:\s+of)?\s+\S"
    r"|©\s*\S)",
    re.IGNORECASE)
_LINK = re.compile(r"(?<!!)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")  # one level of [] inside
_PERMALINK = re.compile(r"\s*[¶§#🔗]+\s*$")  # a heading's permalink sign (Sphinx's ¶, GitHub's #)
_HEADING = re.compile(r"^(#{1,6})\s+\S")
_LIST_OR_TABLE = re.compile(r"^(?:[-*+]\s|\d+[.)]\s|\||```)")
_FENCE = "```"
_TABLE_RULE = re.compile(r"-{3,}")
_ENDS_SENTENCE = re.compile(r"[.!?:;\"'”’)\]]$")
_HYPHEN_BREAK = re.compile(r"[A-Za-z]-$")


def _is_heading(block: str) -> bool:
    return bool(_HEADING.match(block))


def remove_image_tags(block: str) -> str:
    return _IMAGE.sub("", block).strip()


def unwrap_links(block: str) -> str:
    """``[text](url)`` → ``text``: a URL is not something to ask a question about."""
    return _LINK.sub(r"\1", block)


def drop_permalink(block: str) -> str:
    return _PERMALINK.sub("", block) if _is_heading(block) else block


def is_verbatim(block: str) -> bool:
    """A fenced code block or a table: its line breaks carry meaning."""
    return block.startswith(_FENCE) or all(line.startswith("|") for line in block.splitlines())


def markdown_blocks(markdown: str) -> list[str]:
    """Blocks separated by blank lines; a fenced code block is one block, its blank lines dropped (chunks split at them)."""
    blocks: list[str] = []
    fence: list[str] | None = None
    for block in markdown.split("\n\n"):
        if fence is not None:
            fence.append(block.strip("\n"))
            if block.rstrip().endswith(_FENCE):
                blocks.append("\n".join(fence))
                fence = None
        elif block.lstrip().startswith(_FENCE) and (block.count(_FENCE) % 2 == 1):
            fence = [block.strip()]
        else:
            blocks.append(block)
    if fence is not None:
        blocks.append("\n".join(fence) + "\n" + _FENCE)
    return blocks


def tidy_verbatim(block: str) -> str:
    """Trailing spaces off a code block; a table's cell padding and long rules shortened (they are only tokens)."""
    lines = [line.rstrip() for line in block.strip().splitlines() if line.strip()]
    if not block.startswith(_FENCE):
        lines = [_TABLE_RULE.sub("---", " ".join(line.split())) for line in lines]
    return "\n".join(lines)


def unescape_entities(block: str) -> str:
    return html.unescape(block)


def fix_characters(block: str) -> str:
    """Typographic ligatures (ﬁ, ﬂ…) back to letters, soft hyphens removed: search and tokenizers see plain words."""
    return block.translate(_LIGATURES)


def is_page_number(block: str) -> bool:
    return bool(_PAGE_NUMBER.match(block.strip()))


def is_toc_line(block: str) -> bool:
    """A table-of-contents or index line: dot leaders (spaced or not) to a page, or a term followed by page numbers."""
    text = block.strip().lstrip("#").strip()
    if len(text) > _TOC_LINE_MAX:  # a paragraph that happens to hold "......" (code, an elided quote) is prose
        return False
    return bool(_DOT_LEADER.search(text) or _TOC_TITLE.match(text) or _PAGE_LIST.match(text))


def _evenly_spaced(values: list[float]) -> bool:
    steps = {round(b - a, 6) for a, b in itertools.pairwise(values)}
    ratios = {round(b / a, 6) for a, b in itertools.pairwise(values) if a} if all(values) else set()
    return (len(steps) == 1 and 0 not in steps) or (len(ratios) == 1 and 1 not in ratios)


def is_figure_text(block: str) -> bool:
    """Text drawn inside a figure, read as a line: an axis's tick labels (three numbers or more, evenly spaced or
    on a log scale: "0 20 40 60 80 100", "1 10 100 1000") or a logo's letters (one short token repeated)."""
    tokens = block.split()
    if len(tokens) < 3:
        return False
    if all(_NUMBER.match(token) for token in tokens):
        return _evenly_spaced([float(token.rstrip("%").replace(",", ".").replace("−", "-")) for token in tokens])
    return len(set(tokens)) == 1 and len(tokens[0]) <= 2


def is_photo_credit(block: str) -> bool:
    text = block.strip()
    return len(text) <= 160 and bool(_CREDIT.match(text))


@dataclass(frozen=True)
class Furniture:
    """What ``drop_page_furniture`` removed, for the manifest."""

    running: int = 0
    page_numbers: int = 0
    toc_index_pages: int = 0
    figure_text: int = 0


def _furniture_key(text: str) -> str:
    return re.sub(r"\d+", "#", " ".join(text.casefold().split()))


def _rows(lines: list[Line], indices: list[int]) -> list[list[int]]:
    """A page's lines grouped into rows (lines that share a top, like a header and its page number), top to bottom."""
    rows: list[list[int]] = []
    for index in sorted(indices, key=lambda i: lines[i].top):
        if rows and abs(lines[rows[-1][0]].top - lines[index].top) <= 2:
            rows[-1].append(index)
        else:
            rows.append([index])
    return rows


def _by_page(lines: list[Line]) -> dict[int, list[int]]:
    by_page: dict[int, list[int]] = defaultdict(list)
    for index, line in enumerate(lines):
        by_page[line.page].append(index)
    return by_page


def _edge_rows(lines: list[Line], by_page: dict[int, list[int]]) -> tuple[set[int], set[int]]:
    """Lines in each page's top and bottom rows; and those of them set apart from the body by a wider gap.

    Running headers and footers sit in the margin, apart from the text block: the gap to the
    next row is wider than the document's usual line spacing. A body line that happens to end
    many pages (an option listing's "Default value: 0") has the usual spacing above it.
    """
    pages = {page: _rows(lines, indices) for page, indices in by_page.items()}
    gaps = sorted(lines[b[0]].top - lines[a[0]].top for rows in pages.values() for a, b in itertools.pairwise(rows))
    spacing = gaps[len(gaps) // 2] if gaps else 0.0
    edges: set[int] = set()
    apart: set[int] = set()
    for rows in pages.values():
        for row, neighbour in ((rows[0], rows[1] if len(rows) > 1 else None), (rows[-1], rows[-2] if len(rows) > 1 else None)):
            edges.update(row)
            if neighbour is None or abs(lines[row[0]].top - lines[neighbour[0]].top) > 1.4 * spacing:
                apart.update(row)
    return edges, apart


def figure_rows(lines: list[Line]) -> set[int]:
    """Lines drawn in a figure: a row (one page, one baseline) of three cells or more that read, left to right,
    as an axis's tick labels or a logo's letters (``is_figure_text``). Each label is a cell of its own, so alone
    each looks like a page number, and a page with a chart looked like a contents page."""
    rows: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, line in enumerate(lines):
        rows[(line.page, round(line.top / 2))].append(index)
    found: set[int] = set()
    for indices in rows.values():
        cells = sorted(indices, key=lambda i: lines[i].left)
        if len(cells) >= 3 and not any(lines[i].heading for i in cells) \
                and is_figure_text(" ".join(lines[i].text for i in cells)):
            found.update(cells)
    return found


def drop_page_furniture(lines: list[Line], min_pages: int = 3) -> tuple[list[Line], Furniture]:
    """Remove running headers/footers, page numbers and table-of-contents/index pages; headings are never removed.

    A page number is a number alone in a page's top or bottom row. A running header or footer
    is a line whose text (digits aside) stands in such a row on ``min_pages`` pages or more
    (fewer in a short document), set apart from the body there, or at one fixed height and
    set apart on some of them; it is removed from every top or bottom row it stands in. A page
    is a TOC or index page when most of its lines are TOC/index lines.
    """
    figures = figure_rows(lines)
    if figures:
        kept, furniture = drop_page_furniture([line for i, line in enumerate(lines) if i not in figures], min_pages)
        return kept, Furniture(furniture.running, furniture.page_numbers, furniture.toc_index_pages, len(figures))
    by_page = _by_page(lines)
    edges, apart = _edge_rows(lines, by_page)
    at_edge: dict[str, set[int]] = defaultdict(set)
    set_apart: dict[str, set[int]] = defaultdict(set)
    tops: dict[str, list[float]] = defaultdict(list)
    for index in edges:
        key = _furniture_key(lines[index].text)
        at_edge[key].add(lines[index].page)
        tops[key].append(lines[index].top)
        if index in apart:
            set_apart[key].add(lines[index].page)
    needed = min(min_pages, max(2, len(by_page) // 2 + 1))
    # set apart from the body on enough pages, or at one fixed height on every page and set apart on some
    running = {key for key, pages in at_edge.items() if len(pages) >= needed and (
        len(set_apart[key]) >= needed or (set_apart[key] and max(tops[key]) - min(tops[key]) <= 1.5))}

    toc_pages = set()
    for page, indices in by_page.items():
        body = [i for i in indices if i not in edges or not is_page_number(lines[i].text)]
        listing = sum(is_toc_line(lines[i].text) or is_page_number(lines[i].text) for i in body)
        if len(body) >= 4 and listing / len(body) >= 0.5:
            toc_pages.add(page)

    kept: list[Line] = []
    counts = Counter()
    for index, line in enumerate(lines):
        if line.heading:
            kept.append(line)
        elif line.page in toc_pages:
            continue
        elif index in edges and is_page_number(line.text):
            counts["page_numbers"] += 1
        elif index in edges and _furniture_key(line.text) in running:
            counts["running"] += 1
        else:
            kept.append(line)
    return kept, Furniture(running=counts["running"], page_numbers=counts["page_numbers"], toc_index_pages=len(toc_pages))


def join_wrapped_lines(blocks: list[str]) -> list[str]:
    """Re-join lines that a PDF wrapped into separate blocks; undo end-of-line hyphenation."""
    joined: list[str] = []
    for block in blocks:
        previous = joined[-1] if joined else None
        mergeable = (
            previous is not None
            and not _is_heading(previous) and not _is_heading(block)
            and not _LIST_OR_TABLE.match(block) and not _LIST_OR_TABLE.match(previous)
            and (not _ENDS_SENTENCE.search(previous) or block[:1].islower())
        )
        if not mergeable:
            joined.append(block)
        elif _HYPHEN_BREAK.search(previous) and block[:1].islower():
            joined[-1] = previous[:-1] + block
        else:
            joined[-1] = f"{previous} {block}"
    return joined


def drop_empty_sections(blocks: list[str]) -> list[str]:
    """Remove headings with no content before the next heading of the same or a higher level."""
    kept: list[str] = []
    for index, block in enumerate(blocks):
        heading = _HEADING.match(block)
        if heading:
            level = len(heading.group(1))
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            next_heading = _HEADING.match(following) if following else None
            if following is None or (next_heading and len(next_heading.group(1)) <= level):
                continue
        kept.append(block)
    return kept


_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")


def one_line_per_item(block: str) -> str:
    """Whitespace collapsed, but a list keeps one item per line (a wrapped item's lines re-joined)."""
    items: list[str] = []
    for line in block.splitlines():
        if not items or _LIST_ITEM.match(line):
            items.append(line)
        else:
            items[-1] += " " + line
    return "\n".join(" ".join(item.split()) for item in items if item.strip())


def _clean_block(block: str) -> str:
    if block.strip().startswith(_FENCE):
        return tidy_verbatim(block)
    if is_verbatim(block.strip()):  # a table
        return tidy_verbatim(unwrap_links(fix_characters(unescape_entities(block))))
    return drop_permalink(unwrap_links(fix_characters(unescape_entities(remove_image_tags(one_line_per_item(block))))))


def _is_noise(block: str) -> bool:
    """Empty, or mostly page numbers, TOC/index lines, credits and figure text (a list's items are judged one by one)."""
    if not block or is_verbatim(block):
        return not block
    lines = block.splitlines()
    return 2 * sum(is_page_number(line) or is_toc_line(line) or is_photo_credit(line) or is_figure_text(line)
                   for line in lines) > len(lines)


def clean_markdown(markdown: str) -> str:
    """Apply every rule in order; the result has one blank line between blocks and ends with a newline."""
    blocks = [_clean_block(b) for b in markdown_blocks(markdown)]
    blocks = [b for b in blocks if not _is_noise(b)]
    blocks = join_wrapped_lines(blocks)
    blocks = drop_empty_sections(blocks)
    return "\n\n".join(blocks) + "\n" if blocks else ""
