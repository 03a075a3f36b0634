"""Fetch documents (PDFs, web pages) concurrently, politely and safely, into content-addressed files.

The web is hostile to batch downloads: slow hosts, rate limits, error pages served as
``.pdf``, binaries served as ``text/html``, multi-GB files, redirects to internal addresses.
Each URL ends in exactly one recorded outcome (see ``records.DownloadStatus``); only
transient failures are retried, with exponential backoff and full jitter, honouring
``Retry-After``. What a document is comes from its first bytes, never from its URL or its
Content-Type. Bytes are streamed to a temp file while hashed, so the cap is enforced without
holding files in memory and a crash never leaves a partial ``<sha256>.pdf`` or ``.html``.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import ipaddress
import os
import re
import socket
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import pypdfium2
from aiohttp.abc import ResolveResult
from aiohttp.resolver import DefaultResolver
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.asyncio import concurrency

from core import artifacts
from core.config import DataCollector
from core.files import sha256_file
from tasks.common.pdfium import open_pdf
from tasks.common.records import Document, DocumentKind, DownloadStatus, SourceRef, utc_now
from tasks.common.retry import backoff_delay, parse_retry_after

PDF_MAGIC = b"%PDF-"
_CHUNK = 64 * 1024
_SNIFF = 1024  # bytes read before deciding what a document is
_HTML_START = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!doctype\s+html|<html|<head|<body|<!--)", re.IGNORECASE)
_HTML_TAG = re.compile(rb"<(?:html|head|body|title|meta|p|div|h[1-6])[\s>/]", re.IGNORECASE)
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1f]")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
KINDS: dict[str, frozenset[DocumentKind]] = {"pdf": frozenset({"pdf"}), "html": frozenset({"html"}),
                                             "any": frozenset({"pdf", "html"})}
_REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class DownloadPolicy:
    """``data_collector``'s limits in the units the downloader works in, and the shared limit's name."""

    max_concurrency: int
    max_per_host: int
    connect_timeout_s: float
    read_timeout_s: float
    max_retries: int
    backoff_base_s: float
    backoff_max_s: float
    max_bytes: int
    max_redirects: int
    allow_private: bool
    user_agent: str
    mode: str  # data_collector.mode: which kinds of document are kept (KINDS)
    shared_limit: str | None  # a Prefect global concurrency limit bounding every run's downloads together

    @classmethod
    def of(cls, c: DataCollector, shared_limit: str | None = None) -> DownloadPolicy:
        return cls(max_concurrency=c.max_concurrent_downloads, max_per_host=c.max_per_host,
                   connect_timeout_s=c.connect_timeout_s, read_timeout_s=c.read_timeout_s, max_retries=c.max_retries,
                   backoff_base_s=c.backoff_base_s, backoff_max_s=c.backoff_max_s,
                   max_bytes=int(c.max_file_size_mb * 1024 * 1024), max_redirects=c.max_redirects,
                   allow_private=c.allow_private_addresses, user_agent=c.user_agent, mode=c.mode,
                   shared_limit=shared_limit)


class BlockedAddress(OSError):
    """The target resolves to an address the policy refuses (loopback, private, link-local...)."""


class _Outcome(Exception):
    """A final, non-ok result for this URL."""

    def __init__(self, status: DownloadStatus, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class _Transient(_Outcome):
    """A failure worth retrying; ``retry_after`` is the server's requested wait, if any."""

    def __init__(self, status: DownloadStatus, error: str, retry_after: float | None = None) -> None:
        super().__init__(status, error)
        self.retry_after = retry_after


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global and not ip.is_multicast


def check_url(url: str, allow_private: bool) -> None:
    """Refuse non-http(s) URLs and literal non-public IPs (hostnames are checked when resolved)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise _Outcome("blocked", f"scheme '{parts.scheme}' is not allowed (only http/https)")
    if not parts.hostname:
        raise _Outcome("blocked", "URL has no host")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if not allow_private and not is_public_address(str(literal)):
        raise _Outcome("blocked", f"address {literal} is not public (set data_collector.allow_private_addresses to allow)")


class _GuardedResolver(DefaultResolver):
    """Resolve as usual, then refuse non-public addresses: this also covers redirects and DNS tricks."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        refused = [r["host"] for r in results if not is_public_address(r["host"])]
        if refused:
            raise BlockedAddress(f"{host} resolves to non-public address {refused[0]} "
                                 "(set data_collector.allow_private_addresses to allow)")
        return results


def count_pages(path: Path) -> int | None:
    try:
        with open_pdf(path) as document:
            return len(document)
    except (pypdfium2.PdfiumError, OSError):
        return None


def sniff_kind(head: bytes) -> DocumentKind | None:
    """What a document's first bytes say it is: a PDF, an HTML page, or neither (``None``: binary or plain text)."""
    if head.startswith(PDF_MAGIC):
        return "pdf"
    head = head.removeprefix(b"\xef\xbb\xbf")
    if not head or len(_CONTROL.findall(head)) > len(head) // 100:  # control bytes: a binary, whatever it was served as
        return None
    return "html" if _HTML_START.match(head) or _HTML_TAG.search(head) else None


def page_title(path: Path) -> str | None:
    """An HTML page's ``<title>``, from its first 64 KiB."""
    with path.open("rb") as handle:
        head = handle.read(64 * 1024).decode("utf-8", "replace")
    found = _TITLE.search(head)
    title = " ".join(html.unescape(found.group(1)).split()) if found else ""
    return title or None


class DocumentSink:
    """Accumulates a stream into a temp file in ``raw_dir``: tells its kind, enforces the cap, hashes."""

    def __init__(self, raw_dir: Path, max_bytes: int, mode: str) -> None:
        raw_dir.mkdir(parents=True, exist_ok=True)
        self.raw_dir = raw_dir
        self.max_bytes = max_bytes
        self.mode = mode
        self.kind: DocumentKind | None = None
        self.size = 0
        self._head = b""
        self._digest = hashlib.sha256()
        fd, name = tempfile.mkstemp(dir=raw_dir, prefix=".download.", suffix=".part")
        self._tmp = Path(name)
        self._handle = os.fdopen(fd, "wb")

    def _refuse(self, kind: DocumentKind | None) -> _Outcome:
        start = self._head[:16]
        if self.mode == "pdf":
            return _Outcome("not_pdf", f"content does not start with %PDF- (starts with {start!r})" if start
                            else "empty or too short to be a PDF")
        if kind is None:
            return _Outcome("unsupported", f"neither a PDF nor an HTML page (starts with {start!r})" if start
                            else "empty: no content")
        return _Outcome("unsupported", f"a {kind.upper()} document, and data_collector.mode is {self.mode}")

    def _decide(self) -> None:
        kind = sniff_kind(self._head)
        if kind is None or kind not in KINDS[self.mode]:
            raise self._refuse(kind)
        self.kind = kind

    def write(self, block: bytes) -> None:
        self.size += len(block)
        if self.size > self.max_bytes:
            raise _Outcome("too_large", f"larger than the {self.max_bytes} byte cap")
        if self.kind is None:
            self._head += block[: _SNIFF - len(self._head)]
            if len(self._head) >= _SNIFF or (self.mode == "pdf" and len(self._head) >= len(PDF_MAGIC)):
                self._decide()
        self._digest.update(block)
        self._handle.write(block)

    def commit(self) -> tuple[str, DocumentKind, Path]:
        """Move the finished file to ``<sha256>.<kind>``; identical content already there is kept as is."""
        if self.kind is None:
            self._decide()  # a short document: decided on all of it (the caller discards it when refused)
        assert self.kind is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        sha = self._digest.hexdigest()
        target = artifacts.raw_document(self.raw_dir, sha, self.kind)
        if target.exists():
            self._tmp.unlink(missing_ok=True)
        else:
            os.replace(self._tmp, target)
        return sha, self.kind, target

    def discard(self) -> None:
        self._handle.close()
        self._tmp.unlink(missing_ok=True)


def _ok_document(ref: SourceRef, sha: str, kind: DocumentKind, target: Path, size: int, attempts: int,
                 final_url: str | None = None) -> Document:
    if kind == "pdf":
        title, pages = ref.title, count_pages(target)
    else:  # a web page is one page; its own title says more than a file name
        title, pages = page_title(target) or ref.title, 1
    return Document(url=ref.url, title=title, source=ref.source, kind=kind, final_url=final_url, sha256=sha,
                    bytes=size, pages=pages, status="ok", attempts=attempts)


def import_local_file(path: Path, raw_dir: Path, max_bytes: int, mode: str = "pdf", source: str = "local") -> Document:
    """Validate and copy a local PDF or HTML file into the raw store, exactly as a download would be."""
    ref = SourceRef(url=path.resolve().as_uri(), title=path.stem, source=source)
    if not path.is_file():
        return Document(url=ref.url, title=ref.title, source=source, status="http_error", error="file not found")
    sink = DocumentSink(raw_dir, max_bytes, mode)
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                sink.write(block)
        sha, kind, target = sink.commit()
    except _Outcome as outcome:
        sink.discard()
        return Document(url=ref.url, title=ref.title, source=source, status=outcome.status, error=outcome.error)
    return _ok_document(ref, sha, kind, target, sink.size, attempts=1)


def is_settled(document: Document, raw_dir: Path) -> bool:
    """True when a URL needs no new attempt: a permanent failure, or an ``ok`` file still on disk unchanged."""
    if document.status != "ok":
        return not document.retryable
    return is_still_valid(document, raw_dir)


def is_still_valid(document: Document, raw_dir: Path) -> bool:
    """True when an earlier ``ok`` download is still on disk with the same content."""
    if document.status != "ok" or not document.sha256:
        return False
    path = artifacts.raw_document(raw_dir, document.sha256, document.kind)
    return path.is_file() and sha256_file(path) == document.sha256


_ACCEPT = {"pdf": "application/pdf,*/*;q=0.5", "html": "text/html,application/xhtml+xml,*/*;q=0.5",
           "any": "application/pdf,text/html,application/xhtml+xml,*/*;q=0.5"}


class Downloader:
    """One pooled HTTP session with global and per-host bounds, shared by all downloads of a run."""

    def __init__(self, policy: DownloadPolicy, raw_dir: Path) -> None:
        self.policy = policy
        self.raw_dir = raw_dir
        self._global = asyncio.Semaphore(policy.max_concurrency)
        self._per_host: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(policy.max_per_host))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Downloader:
        connector = aiohttp.TCPConnector(
            limit=self.policy.max_concurrency,
            resolver=None if self.policy.allow_private else _GuardedResolver(),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.policy.user_agent, "Accept": _ACCEPT[self.policy.mode]},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.policy.connect_timeout_s,
                                          sock_read=self.policy.read_timeout_s),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _shared_slot(self) -> AbstractAsyncContextManager[object]:
        if self.policy.shared_limit is None:
            return nullcontext()
        return concurrency(self.policy.shared_limit, strict=True)

    async def fetch(self, ref: SourceRef) -> Document:
        """Download one URL, retrying transient failures; always returns a recorded outcome."""
        attempt = 0
        while True:
            try:
                async with self._global, self._shared_slot():
                    sha, kind, target, size, final_url = await self._fetch_once(ref.url)
                return _ok_document(ref, sha, kind, target, size, attempt + 1, final_url if final_url != ref.url else None)
            except _Transient as failure:
                if attempt >= self.policy.max_retries:
                    return Document(url=ref.url, title=ref.title, source=ref.source, status=failure.status,
                                    error=f"{failure.error} (gave up after {attempt + 1} attempts)", attempts=attempt + 1,
                                    retryable=True)
                await asyncio.sleep(backoff_delay(attempt, self.policy.backoff_base_s, self.policy.backoff_max_s,
                                                    failure.retry_after))
                attempt += 1
            except _Outcome as outcome:
                return Document(url=ref.url, title=ref.title, source=ref.source, status=outcome.status,
                                error=outcome.error, attempts=attempt + 1, fetched_at=utc_now())

    async def _fetch_once(self, url: str) -> tuple[str, DocumentKind, Path, int, str]:
        assert self._session is not None, "use Downloader as an async context manager"
        current = url
        for _ in range(self.policy.max_redirects + 1):
            check_url(current, self.policy.allow_private)
            host = urlsplit(current).hostname or ""
            try:
                async with self._per_host[host], self._session.get(current, allow_redirects=False) as response:
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        current = urljoin(current, response.headers["Location"])
                        continue
                    return *await self._store(response), current
            except (TimeoutError, aiohttp.ServerTimeoutError) as error:
                raise _Transient("timeout", f"timed out ({type(error).__name__})") from None
            except aiohttp.ClientConnectorError as error:
                if isinstance(error.os_error, BlockedAddress):
                    raise _Outcome("blocked", str(error.os_error)) from None
                if isinstance(error, aiohttp.ClientConnectorDNSError):
                    raise _Outcome("http_error", f"cannot resolve host: {error.os_error}") from None
                raise _Transient("http_error", f"connection failed: {error.os_error}") from None
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
                raise _Transient("http_error", f"connection broken: {type(error).__name__}: {error}") from None
        raise _Outcome("http_error", f"more than {self.policy.max_redirects} redirects")

    async def _store(self, response: aiohttp.ClientResponse) -> tuple[str, DocumentKind, Path, int]:
        status = response.status
        if status == 429 or status == 408 or status >= 500:
            raise _Transient("http_error", f"HTTP {status} {response.reason}",
                             parse_retry_after(response.headers.get("Retry-After")))
        if status >= 400:
            raise _Outcome("http_error", f"HTTP {status} {response.reason}")
        if response.content_length is not None and response.content_length > self.policy.max_bytes:
            raise _Outcome("too_large", f"Content-Length {response.content_length} exceeds the {self.policy.max_bytes} byte cap")
        sink = DocumentSink(self.raw_dir, self.policy.max_bytes, self.policy.mode)
        try:
            async for block in response.content.iter_chunked(_CHUNK):
                sink.write(block)
            sha, kind, target = await asyncio.to_thread(sink.commit)
        except BaseException:
            sink.discard()
            raise
        return sha, kind, target, sink.size


@task(name="import-local-files", cache_policy=NO_CACHE)
def import_local_files(paths: list[Path], raw_dir: Path, max_bytes: int, mode: str = "pdf",
                       on_result: Callable[[Document], None] | None = None) -> list[Document]:
    documents = []
    for path in paths:
        documents.append(import_local_file(path, raw_dir, max_bytes, mode))
        if on_result is not None:
            on_result(documents[-1])
    return documents


@task(name="download-documents", cache_policy=NO_CACHE)
async def download_documents(refs: Iterable[SourceRef], raw_dir: Path, policy: DownloadPolicy,
                             on_result: Callable[[Document], None] | None = None) -> list[Document]:
    """Download every ref concurrently; results come back in input order, one per ref."""
    refs = list(refs)
    async with Downloader(policy, raw_dir) as downloader:

        async def one(ref: SourceRef) -> Document:
            document = await downloader.fetch(ref)
            if on_result is not None:
                on_result(document)
            return document

        return list(await asyncio.gather(*(one(ref) for ref in refs)))
