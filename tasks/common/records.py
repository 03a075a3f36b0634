"""Records that cross stage boundaries. The JSON files between stages are these, serialised."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

# not_pdf: the mode is pdf and the content is not one; unsupported: neither a PDF nor an HTML page (or a kind the mode leaves out)
DownloadStatus = Literal["ok", "not_pdf", "unsupported", "too_large", "http_error", "timeout", "blocked"]
DocumentKind = Literal["pdf", "html"]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class SourceRef(BaseModel):
    """A document to fetch, as found by a search or listed locally."""

    url: str
    title: str | None = None
    source: str


class Document(BaseModel):
    """One entry of ``data/raw/metadata.json``: every URL tried, with its outcome."""

    url: str
    title: str | None = None
    source: str
    kind: DocumentKind = "pdf"       # told by the content (``%PDF-`` or HTML), never by the URL
    final_url: str | None = None     # where the redirects ended, when they moved it
    sha256: str | None = None
    bytes: int | None = None
    pages: int | None = None
    fetched_at: str = Field(default_factory=utc_now)
    status: DownloadStatus
    error: str | None = None
    attempts: int = 1
    retryable: bool = False  # failed on a transient error (timeout, 429, 5xx): try again on the next run


class Conversion(BaseModel):
    """One entry of ``data/processed/manifest.json``: how a raw document became Markdown, or why it did not."""

    sha256: str
    status: Literal["ok", "failed"]
    kind: DocumentKind = "pdf"
    converter: str
    pages: int | None = None
    headings: int = 0
    heading_source: str | None = None  # outline | typography | numbered | layout-model | html | None
    noise_lines: int = 0               # running headers/footers, page numbers and figure text removed
    seconds: float = 0.0
    step: Literal["conversion", "headings", "cleaning", "chunking"] | None = None  # where it failed
    error: str | None = None   # why, in one line (tasks.process.reasons)
    detail: str | None = None  # the converter's own error, in full


class Chunk(BaseModel):
    """One entry of ``data/chunks/chunks.json``."""

    id: str
    doc_sha256: str
    url: str | None = None
    section_path: list[str]
    text: str
    tokens: int
