"""SerpAPI search through the real client library against a loopback server speaking SerpAPI's protocol."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from core.config import ConfigError, Secrets
from harness.serpapi import fake_serpapi
from tasks.collect.search import SearchError, list_local_sources, search_serpapi

KEY = "test-key-1234567890"


def search(endpoint: str, num_results: int, key: str = KEY, **kwargs):
    return search_serpapi.fn("pregnancy guide", SecretStr(key), num_results, endpoint=endpoint, **kwargs)


def test_paginates_until_enough_unique_links():
    links = [f"https://example.org/doc{i}.pdf" for i in range(25)]
    with fake_serpapi(links + links[:5], KEY) as server:
        refs = search(server.url, num_results=23, results_per_page=10)
    assert [r.url for r in refs] == links[:23]
    assert all(r.source == "serpapi" and r.title for r in refs)
    assert [hit.query["start"] for hit in server.hits] == ["0", "10", "20"]
    assert server.hits[0].query["q"] == "pregnancy guide filetype:pdf"


def test_stops_when_results_run_out_and_dedupes():
    links = ["https://example.org/a.pdf", "https://example.org/b.pdf", "https://example.org/a.pdf"]
    with fake_serpapi(links, KEY) as server:
        refs = search(server.url, num_results=50, results_per_page=2)
    assert [r.url for r in refs] == ["https://example.org/a.pdf", "https://example.org/b.pdf"]


@pytest.mark.parametrize("mode", ["html", "any"])
def test_web_page_modes_send_the_plain_query(mode):
    with fake_serpapi(["https://example.org/a.html"], KEY) as server:
        search(server.url, num_results=1, mode=mode)
    assert server.hits[0].query["q"] == "pregnancy guide"


def test_bad_key_is_a_clear_error_without_the_key():
    with fake_serpapi(["https://example.org/a.pdf"], KEY) as server, pytest.raises(SearchError) as error:
        search(server.url, num_results=1, key="wrong-key-abcdef")
    assert "Invalid API key" in str(error.value)
    assert "wrong-key-abcdef" not in str(error.value)


def test_unreachable_endpoint_error_hides_the_key():
    with pytest.raises(SearchError) as error:
        search("http://127.0.0.1:9", num_results=1, key="secret-key-xyz", retries=0, timeout_s=2)
    assert "cannot reach SerpAPI" in str(error.value)
    assert "secret-key-xyz" not in str(error.value)


def test_missing_key_names_the_variable_and_the_alternative(monkeypatch, tmp_path):
    monkeypatch.delenv("SERP_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        Secrets().require("serp_api_key", "data_collector.source: serpapi", "use data_collector.source: local")
    assert "SERP_API_KEY is not set" in str(error.value) and "source: local" in str(error.value)


def test_secrets_never_show_in_repr(monkeypatch):
    monkeypatch.setenv("SERP_API_KEY", "super-secret-value")
    secrets = Secrets()
    assert "super-secret-value" not in repr(secrets) and "super-secret-value" not in str(secrets.model_dump())


def test_local_sources_list_pdfs_and_urls(tmp_path):
    (tmp_path / "b.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "a.PDF").write_bytes(b"%PDF-1.4")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "site" / "deep").mkdir(parents=True)
    (tmp_path / "site" / "deep" / "page.html").write_text("<p>x</p>")
    (tmp_path / "site" / "c.pdf").write_bytes(b"%PDF-1.4")
    url_file = tmp_path / "urls.txt"
    url_file.write_text("# sources\nhttps://example.org/x.pdf\n\n  https://example.org/y.pdf  \n")
    files, refs = list_local_sources.fn(tmp_path, url_file)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.PDF", "b.pdf", "site/c.pdf"]  # recursively
    assert [r.url for r in refs] == ["https://example.org/x.pdf", "https://example.org/y.pdf"]
    files, _ = list_local_sources.fn(tmp_path, None, "any")
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.PDF", "b.pdf", "site/c.pdf", "site/deep/page.html"]
    files, _ = list_local_sources.fn(tmp_path, None, "html")
    assert [f.name for f in files] == ["page.html"]


def test_missing_local_folder_says_how_to_fix(tmp_path):
    with pytest.raises(SearchError, match=r"local.dir: folder not found.*scripts/setup\.sh"):
        list_local_sources.fn(tmp_path / "nope", None)
