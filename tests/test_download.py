"""Stage 1 downloads against a real loopback web host that misbehaves in every usual way."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from core.config import DataCollector
from harness.pdf_host import PAGE
from tasks.collect.download import DownloadPolicy, download_documents, import_local_file, is_still_valid
from tasks.common.records import Document, SourceRef

FAST = DownloadPolicy.of(DataCollector(max_concurrent_downloads=8, max_per_host=4, connect_timeout_s=2, read_timeout_s=1,
                                       max_retries=2, backoff_base_s=0.05, backoff_max_s=2, max_file_size_mb=2,
                                       allow_private_addresses=True))


def fetch(urls: list[str], raw_dir: Path, policy: DownloadPolicy = FAST) -> list[Document]:
    refs = [SourceRef(url=url, source="test") for url in urls]
    return asyncio.run(download_documents.fn(refs, raw_dir, policy))


def leftovers(raw_dir: Path) -> list[str]:
    return [p.name for p in raw_dir.iterdir() if p.suffix not in (".pdf", ".html")] if raw_dir.exists() else []


def test_good_pdfs_are_stored_by_content_hash(pdf_server, sample_pdfs, tmp_path):
    names = list(sample_pdfs)
    docs = fetch([f"{pdf_server.url}/pdf/{name}" for name in names], tmp_path)
    for name, doc in zip(names, docs, strict=True):
        expected = hashlib.sha256(sample_pdfs[name]).hexdigest()
        assert (doc.status, doc.sha256, doc.bytes) == ("ok", expected, len(sample_pdfs[name]))
        assert doc.pages and doc.pages >= 3
        assert (tmp_path / f"{expected}.pdf").read_bytes() == sample_pdfs[name]
    assert leftovers(tmp_path) == []


def test_duplicate_content_collapses_to_one_file(pdf_server, sample_pdfs, tmp_path):
    first = next(iter(sample_pdfs))
    docs = fetch([f"{pdf_server.url}/pdf/{first}", f"{pdf_server.url}/redirect.pdf"], tmp_path)
    assert [d.status for d in docs] == ["ok", "ok"]
    assert docs[0].sha256 == docs[1].sha256
    assert len(list(tmp_path.glob("*.pdf"))) == 1


@pytest.mark.parametrize(("path", "status", "error_part"), [
    ("/html.pdf", "not_pdf", "does not start with %PDF-"),
    ("/status/404.pdf", "http_error", "HTTP 404"),
    ("/huge.pdf", "too_large", "cap"),
    ("/huge-declared.pdf", "too_large", "Content-Length"),
    ("/redirect-loop.pdf", "http_error", "redirects"),
])
def test_permanent_failures_are_recorded_without_retry(pdf_server, tmp_path, path, status, error_part):
    [doc] = fetch([pdf_server.url + path], tmp_path)
    assert doc.status == status
    assert error_part in doc.error
    assert doc.attempts == 1
    assert list(tmp_path.glob("*.pdf")) == [] and leftovers(tmp_path) == []


def test_5xx_is_retried_then_succeeds(pdf_server, tmp_path):
    [doc] = fetch([pdf_server.url + "/flaky-500.pdf"], tmp_path)
    assert doc.status == "ok" and doc.attempts == 2
    assert pdf_server.count("/flaky-500.pdf") == 2


def test_connection_reset_is_retried_then_succeeds(pdf_server, tmp_path):
    [doc] = fetch([pdf_server.url + "/flaky-reset.pdf"], tmp_path)
    assert doc.status == "ok" and doc.attempts >= 2
    assert pdf_server.count("/flaky-reset.pdf") == 3


def test_persistent_5xx_gives_up_after_max_retries(pdf_server, tmp_path):
    [doc] = fetch([pdf_server.url + "/status/500.pdf"], tmp_path)
    assert doc.status == "http_error" and "HTTP 500" in doc.error and "3 attempts" in doc.error
    assert pdf_server.count("/status/500.pdf") == 1 + FAST.max_retries


def test_429_waits_for_retry_after(pdf_server, tmp_path):
    [doc] = fetch([pdf_server.url + "/rate-limited.pdf"], tmp_path)
    assert doc.status == "ok" and doc.attempts == 2
    first, second = [hit.at for hit in pdf_server.hits if hit.path == "/rate-limited.pdf"]
    assert second - first >= 0.95  # the server asked for 1 s; backoff alone would be ~0.05 s


def test_slow_host_times_out_and_is_recorded(pdf_server, tmp_path):
    policy = replace(FAST, max_retries=0, read_timeout_s=0.3)
    [doc] = fetch([pdf_server.url + "/slow.pdf"], tmp_path, policy)
    assert doc.status == "timeout"


def test_truncated_pdf_is_kept_for_stage_two_to_judge(pdf_server, tmp_path):
    [doc] = fetch([pdf_server.url + "/truncated.pdf"], tmp_path)
    assert doc.status == "ok" and doc.pages is None


@pytest.mark.parametrize(("url", "error_part"), [
    ("file:///etc/passwd", "scheme 'file'"),
    ("ftp://example.org/a.pdf", "scheme 'ftp'"),
])
def test_only_http_and_https_are_allowed(tmp_path, url, error_part):
    [doc] = fetch([url], tmp_path)
    assert doc.status == "blocked" and error_part in doc.error


def test_private_addresses_are_refused_unless_allowed(pdf_server, sample_pdfs, tmp_path):
    strict = replace(FAST, allow_private=False)
    first = next(iter(sample_pdfs))
    by_ip, by_name, via_redirect = fetch([
        f"{pdf_server.url}/pdf/{first}",                       # literal 127.0.0.1
        f"http://localhost:{pdf_server.port}/pdf/{first}",     # hostname resolving to loopback
        f"http://localhost:{pdf_server.port}/redirect-private.pdf",
    ], tmp_path, strict)
    assert by_ip.status == "blocked" and "127.0.0.1" in by_ip.error
    assert by_name.status == "blocked" and "allow_private_addresses" in by_name.error
    assert via_redirect.status == "blocked"
    assert pdf_server.hits == []  # nothing was sent to the refused host


def test_redirect_is_checked_hop_by_hop(pdf_server, tmp_path):
    [doc] = fetch([pdf_server.url + "/redirect-private.pdf"], tmp_path)  # loopback allowed here
    assert doc.status == "ok"


def test_local_import_validates_like_a_download(sample_pdf_dir, tmp_path):
    good = import_local_file(next(sample_pdf_dir.glob("*.pdf")), tmp_path / "raw", max_bytes=10**7)
    assert good.status == "ok" and good.url.startswith("file://") and is_still_valid(good, tmp_path / "raw")
    fake = tmp_path / "fake.pdf"
    fake.write_text("<html>nope</html>")
    assert import_local_file(fake, tmp_path / "raw", max_bytes=10**7).status == "not_pdf"
    source = next(sample_pdf_dir.glob("*.pdf"))
    assert import_local_file(source, tmp_path / "raw", max_bytes=100).status == "too_large"
    assert source.exists()


ANY = replace(FAST, mode="any")


def test_web_pages_are_told_by_their_content_and_kept_as_fetched(pdf_server, sample_pdfs, tmp_path):
    urls = [f"{pdf_server.url}/page/{name}.html" for name in ("guide", "moved", "binary", "empty", "report")]
    guide, moved, binary, empty, report = fetch(urls, tmp_path, ANY)
    assert (guide.status, guide.kind, guide.pages, guide.title) == ("ok", "html", 1, "Iron in Pregnancy & After")
    assert (tmp_path / f"{guide.sha256}.html").read_bytes() == PAGE  # as fetched, navigation and all
    assert guide.final_url is None and moved.final_url == urls[0] and moved.sha256 == guide.sha256
    assert (binary.status, empty.status) == ("unsupported", "unsupported")
    assert "neither a PDF nor an HTML page" in binary.error and "empty" in empty.error
    first = next(iter(sample_pdfs.values()))
    assert (report.status, report.kind, report.sha256) == ("ok", "pdf", hashlib.sha256(first).hexdigest())  # not by URL
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("mode", "page", "status", "error_part"), [
    ("pdf", "guide", "not_pdf", "does not start with %PDF-"),
    ("html", "report", "unsupported", "a PDF document, and data_collector.mode is html"),
])
def test_a_kind_the_mode_leaves_out_is_recorded_and_not_kept(pdf_server, tmp_path, mode, page, status, error_part):
    [doc] = fetch([f"{pdf_server.url}/page/{page}.html"], tmp_path, replace(FAST, mode=mode))
    assert (doc.status, doc.attempts) == (status, 1) and error_part in doc.error
    assert list(tmp_path.iterdir()) == []


def test_a_folder_of_pages_and_pdfs_imports_each_by_its_content(sample_pdf_dir, tmp_path):
    page = tmp_path / "site" / "guide.htm"
    page.parent.mkdir()
    page.write_bytes(PAGE)
    renamed = tmp_path / "site" / "actually-a-page.pdf"
    renamed.write_bytes(PAGE)
    pdf = next(sample_pdf_dir.glob("*.pdf"))
    docs = [import_local_file(path, tmp_path / "raw", 10**7, mode="any") for path in (page, renamed, pdf)]
    assert [(d.status, d.kind) for d in docs] == [("ok", "html"), ("ok", "html"), ("ok", "pdf")]
    assert docs[0].sha256 == docs[1].sha256 and docs[0].title == "Iron in Pregnancy & After"
    assert all(is_still_valid(d, tmp_path / "raw") for d in docs)


def test_a_changed_file_on_disk_is_not_valid_any_more(sample_pdf_dir, tmp_path):
    doc = import_local_file(next(sample_pdf_dir.glob("*.pdf")), tmp_path, max_bytes=10**7)
    (tmp_path / f"{doc.sha256}.pdf").write_bytes(b"%PDF-1.4 tampered")
    assert not is_still_valid(doc, tmp_path)
