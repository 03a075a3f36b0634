"""Remove what PDFs add to the text that is not content, so chunks and QA pairs stay on topic.

Each rule is a small function over Markdown blocks (paragraphs separated by blank lines),
applied in a fixed order: drop noise blocks first (while each PDF line is still its own
block, so repeated running headers are recognisable), then re-join wrapped lines into
paragraphs, then drop sections left empty.
"""

from __future__ import annotations

import html
import re
from collections import Counter

_IMAGE = re.compile(r"<!--\s*image\s*-->|!\[[^\]]*\]\([^)]*\)")
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?(?:\d{1,4}|[ivxlc]{1,7})(?:\s*(?:/|of)\s*\d{1,4})?$", re.IGNORECASE)
_DOT_LEADER = re.compile(r"(?:\.\s*){4,}\d{1,4}$|(?:…\s*)+\d{1,4}$")
_TOC_TITLE = re.compile(r"^(?:table of )?contents$", re.IGNORECASE)
_CREDIT = re.compile(
    r"^(?:(?:(?:photo(?:graph)?|image|picture|illustration)s?(?:\s+credits?)?|credits?|source)\s*[:\-–—]\s*\S"
    r"|(?:(?:photo|image|picture)s?\s+)?courtesy(?:\s+of)?\s+\S"
    r"|©\s*\S)",
    re.IGNORECASE)
_HEADING = re.compile(r"^(#{1,6})\s+\S")
_LIST_OR_TABLE = re.compile(r"^(?:[-*+]\s|\d+[.)]\s|\|)")
_ENDS_SENTENCE = re.compile(r"[.!?:;\"'”’)\]]$")
_HYPHEN_BREAK = re.compile(r"[A-Za-z]-$")


def _is_heading(block: str) -> bool:
    return bool(_HEADING.match(block))


def remove_image_tags(block: str) -> str:
    return _IMAGE.sub("", block).strip()


def unescape_entities(block: str) -> str:
    return html.unescape(block)


def is_page_number(block: str) -> bool:
    return bool(_PAGE_NUMBER.match(block.strip()))


def is_toc_line(block: str) -> bool:
    text = block.strip().lstrip("#").strip()
    return bool(_DOT_LEADER.search(text) or _TOC_TITLE.match(text))


def is_photo_credit(block: str) -> bool:
    text = block.strip()
    return len(text) <= 160 and bool(_CREDIT.match(text))


def repeated_blocks(blocks: list[str], min_repeats: int = 3, max_chars: int = 80) -> set[str]:
    """Short blocks that recur on many pages: running headers and footers, not content."""
    counts = Counter(b.strip() for b in blocks if b.strip() and not _is_heading(b) and len(b.strip()) <= max_chars)
    return {text for text, n in counts.items() if n >= min_repeats}


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


def clean_markdown(markdown: str) -> str:
    """Apply every rule in order; the result has one blank line between blocks and ends with a newline."""
    blocks = [" ".join(b.split()) for b in markdown.split("\n\n")]
    blocks = [unescape_entities(remove_image_tags(b)) for b in blocks]
    blocks = [b for b in blocks if b and not is_page_number(b) and not is_toc_line(b) and not is_photo_credit(b)]
    running = repeated_blocks(blocks)
    blocks = [b for b in blocks if b not in running]
    blocks = join_wrapped_lines(blocks)
    blocks = drop_empty_sections(blocks)
    return "\n\n".join(blocks) + "\n" if blocks else ""
