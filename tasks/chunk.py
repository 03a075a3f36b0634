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

from tasks.cache_keys import content_key, source_hash
from tasks.files import sha256_file
from tasks.records import Chunk
from tasks.tokens import TokenCounter, token_counter

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


def _pack(pieces: list[str], sizes: list[int], limit: int, joiner: str) -> list[str]:
    """Greedily pack consecutive pieces into groups whose summed size stays within ``limit``."""
    groups: list[str] = []
    current: list[str] = []
    total = 0
    for piece, size in zip(pieces, sizes, strict=False):
        if current and total + size > limit:
            groups.append(joiner.join(current))
            current, total = [], 0
        current.append(piece)
        total += size
    if current:
        groups.append(joiner.join(current))
    return groups


def split_to_fit(text: str, count: TokenCounter, max_tokens: int) -> list[str]:
    """Split ``text`` into parts of at most ``max_tokens``: by paragraphs, then sentences, then words."""
    if count([text])[0] <= max_tokens:
        return [text]
    for pattern, joiner in ((r"\n\n", "\n\n"), (_SENTENCE.pattern, " "), (r"\s+", " ")):
        pieces = [p for p in re.split(pattern, text) if p.strip()]
        if len(pieces) > 1:
            parts: list[str] = []
            for group in _pack(pieces, count(pieces), max_tokens, joiner):
                parts.extend(split_to_fit(group, count, max_tokens))
            return parts
    return [text]


def chunk_id(doc_sha256: str, section_path: list[str], text: str) -> str:
    payload = "\x1f".join([doc_sha256, *section_path, text]).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()[:16]


def chunk_markdown(markdown: str, doc_sha256: str, url: str | None, count: TokenCounter,
                   min_tokens: int, max_tokens: int) -> tuple[list[Chunk], int]:
    """Chunks of one document within [min_tokens, max_tokens]; also returns how many fell outside."""
    chunks: list[Chunk] = []
    out_of_range = 0
    for section_path, body in split_sections(markdown):
        parts = split_to_fit(body, count, max_tokens)
        for text, tokens in zip(parts, count(parts), strict=False):
            if tokens < min_tokens or tokens > max_tokens:
                out_of_range += 1
                continue
            chunks.append(Chunk(id=chunk_id(doc_sha256, section_path, text), doc_sha256=doc_sha256, url=url,
                                section_path=section_path, text=text, tokens=tokens))
    return chunks, out_of_range


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
        "code": source_hash("tasks.chunk", "tasks.tokens"),
        **{name: value for name, value in parameters.items() if name != "documents"},
    })


@task(name="chunk-documents", cache_policy=CacheKeyFnPolicy(cache_key_fn=chunking_key), persist_result=True)
def chunk_documents(documents: list[tuple[str, Path, str | None]], base_model: str, base_model_gguf: str | None,
                    min_tokens: int, max_tokens: int) -> tuple[list[Chunk], dict[str, int]]:
    """Chunk every processed document ``(sha256, markdown path, url)``; returns chunks and counts for the report."""
    count = token_counter(base_model, base_model_gguf)
    chunks: list[Chunk] = []
    out_of_range = 0
    for sha, path, url in documents:
        found, dropped = chunk_markdown(path.read_text(encoding="utf-8"), sha, url, count, min_tokens, max_tokens)
        chunks.extend(found)
        out_of_range += dropped
    chunks, duplicates = drop_duplicates(chunks)
    return chunks, {"chunks": len(chunks), "out_of_token_range": out_of_range, "duplicates": duplicates}
