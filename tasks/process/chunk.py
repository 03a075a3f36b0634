"""Split cleaned Markdown into chunks along its section structure.

A chunk is one section's text (or a part of it), carrying its heading path, so a QA pair
can say where it came from and a question never straddles two topics. Sections over
``max_tokens`` are split at paragraph, then sentence, then word boundaries rather than
dropped; chunks under ``min_tokens`` carry too little to ask about and are dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy

from core.files import sha256_file
from tasks.common.base_models import TokenCounter, token_counter
from tasks.common.cache_keys import content_key, source_hash
from tasks.common.records import Chunk

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def split_sections(markdown: str) -> list[tuple[list[str], str]]:
    """(heading path, body) for every section; text before the first heading has an empty path."""
    sections: list[tuple[list[str], str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []

    def flush() -> None:
        text = "\n\n".join(body).strip()
        if text:
            sections.append(([title for _, title in path], text))
        body.clear()

    for block in markdown.split("\n\n"):
        block = block.strip()
        heading = _HEADING.match(block)
        if heading:
            flush()
            level = len(heading.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, heading.group(2).strip())]
        elif block:
            body.append(block)
    flush()
    return sections


# Boundaries to split at, coarsest first: paragraphs, sentences (Latin and CJK punctuation), lines, any whitespace.
_LEVELS = ((re.compile(r"\n\n"), "\n\n"), (_SENTENCE, " "), (re.compile(r"(?<=[。！？])"), ""),
           (re.compile(r"\n"), "\n"), (re.compile(r"\s+"), " "))


def _pack(pieces: list[str], sizes: list[int], limit: int) -> list[list[str]]:
    """Greedily pack consecutive pieces into groups whose summed size stays within ``limit``."""
    groups: list[list[str]] = []
    current: list[str] = []
    total = 0
    for piece, size in zip(pieces, sizes, strict=True):
        if current and total + size > limit:
            groups.append(current)
            current, total = [], 0
        current.append(piece)
        total += size
    if current:
        groups.append(current)
    return groups


def split_to_fit(text: str, count: TokenCounter, max_tokens: int) -> tuple[list[str], int]:
    """Split ``text`` into parts of at most ``max_tokens``: at paragraphs, then sentences, lines, words.

    Returns the parts and how many unsplittable runs were left out (a single character over
    the limit). Token counts are not additive (pieces joined can count more than their sum),
    so a packed group that is still too long is halved by pieces; a piece with no boundary
    left (a long URL, base64, text without spaces) is cut in halves by characters. Every
    call works on fewer pieces, a deeper level, or a shorter string, so it always ends.
    """
    parts: list[str] = []
    unsplittable = 0

    def fit(piece: str, level: int) -> None:
        nonlocal unsplittable
        if count([piece])[0] <= max_tokens:
            parts.append(piece)
            return
        for depth in range(level, len(_LEVELS)):
            pattern, joiner = _LEVELS[depth]
            pieces = [p for p in pattern.split(piece) if p.strip()]
            if len(pieces) > 1:
                for group in _pack(pieces, count(pieces), max_tokens):
                    fit_group(group, joiner, depth)
                return
        if len(piece) <= 1:
            unsplittable += 1
            return
        middle = len(piece) // 2
        fit(piece[:middle], len(_LEVELS))
        fit(piece[middle:], len(_LEVELS))

    def fit_group(group: list[str], joiner: str, depth: int) -> None:
        if len(group) == 1:
            fit(group[0], depth + 1)
            return
        joined = joiner.join(group)
        if count([joined])[0] <= max_tokens:
            parts.append(joined)
            return
        half = len(group) // 2
        fit_group(group[:half], joiner, depth)
        fit_group(group[half:], joiner, depth)

    fit(text, 0)
    return parts, unsplittable


def chunk_id(doc_sha256: str, section_path: list[str], text: str) -> str:
    payload = "\x1f".join([doc_sha256, *section_path, text]).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()[:16]


def chunk_markdown(markdown: str, doc_sha256: str, url: str | None, count: TokenCounter,
                   min_tokens: int, max_tokens: int) -> tuple[list[Chunk], int, int]:
    """Chunks of one document within [min_tokens, max_tokens]; also how many fell outside, and unsplittable runs."""
    chunks: list[Chunk] = []
    out_of_range = unsplittable = 0
    for section_path, body in split_sections(markdown):
        parts, left_out = split_to_fit(body, count, max_tokens)
        unsplittable += left_out
        for text, tokens in zip(parts, count(parts), strict=True):
            if tokens < min_tokens or tokens > max_tokens:
                out_of_range += 1
                continue
            chunks.append(Chunk(id=chunk_id(doc_sha256, section_path, text), doc_sha256=doc_sha256, url=url,
                                section_path=section_path, text=text, tokens=tokens))
    return chunks, out_of_range, unsplittable


def drop_duplicates(chunks: Iterable[Chunk]) -> tuple[list[Chunk], int]:
    """Keep the first of chunks whose whitespace-normalised text is identical."""
    seen: set[str] = set()
    kept: list[Chunk] = []
    dropped = 0
    for chunk in chunks:
        key = hashlib.sha256(" ".join(chunk.text.split()).encode("utf-8")).hexdigest()
        if key in seen:
            dropped += 1
        else:
            seen.add(key)
            kept.append(chunk)
    return kept, dropped


def chunking_key(_context: Any, parameters: dict[str, Any]) -> str:
    """The documents' content, the tokenizer, the bounds and the chunking code (loading a GGUF tokenizer takes seconds)."""
    return content_key("chunks", {
        "documents": [(sha, sha256_file(path), url) for sha, path, url in parameters["documents"]],
        "code": source_hash("tasks.process.chunk", "tasks.common.base_models"),
        **{name: value for name, value in parameters.items() if name != "documents"},
    })


@task(name="chunk-documents", cache_policy=CacheKeyFnPolicy(cache_key_fn=chunking_key), persist_result=True)
def chunk_documents(documents: list[tuple[str, Path, str | None]], base_model: str, base_model_gguf: str | None,
                    min_tokens: int, max_tokens: int) -> tuple[list[Chunk], dict[str, int], dict[str, str]]:
    """Chunk every processed document ``(sha256, markdown path, url)``.

    Returns the chunks, counts for the report, and the documents whose chunking failed (sha256 → error):
    one document that cannot be chunked never stops the others.
    """
    count = token_counter(base_model, base_model_gguf)
    chunks: list[Chunk] = []
    failed: dict[str, str] = {}
    out_of_range = unsplittable = 0
    for sha, path, url in documents:
        try:
            found, dropped, left_out = chunk_markdown(path.read_text(encoding="utf-8"), sha, url, count,
                                                      min_tokens, max_tokens)
        except Exception as error:  # recorded in the manifest as this document's chunking failure
            failed[sha] = f"{type(error).__name__}: {error}"[:500]
            continue
        chunks.extend(found)
        out_of_range += dropped
        unsplittable += left_out
    chunks, duplicates = drop_duplicates(chunks)
    return chunks, {"chunks": len(chunks), "out_of_token_range": out_of_range, "unsplittable_runs": unsplittable,
                    "duplicates": duplicates}, failed
