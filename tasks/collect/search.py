"""Find documents to collect: SerpAPI web search (real) or a local folder / URL list (offline).

SerpAPI pages results (Google gives at most 10 a page since September 2025); we keep asking
until ``num_results`` unique URLs are found or the results run out. Its client puts the API
key in the query string, so any transport error text is scrubbed before it reaches a log or
an exception.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import requests
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr
from serpapi import GoogleSearch

from tasks.common.records import SourceRef

_TRANSIENT = {408, 429, 500, 502, 503, 504}


class SearchError(Exception):
    """The search service refused or failed; the message is safe to show (no key in it)."""


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _serpapi_page(params: dict, endpoint: str, api_key: str, timeout_s: float, retries: int) -> dict:
    for attempt in range(retries + 1):
        client = GoogleSearch(dict(params, api_key=api_key))
        client.BACKEND = endpoint.rstrip("/")
        client.timeout = timeout_s
        try:
            response = client.get_response()
        except requests.RequestException as error:
            failure = f"cannot reach SerpAPI at {endpoint}: {_redact(str(error), api_key)}"
        else:
            if response.status_code not in _TRANSIENT:
                try:
                    payload = response.json()
                except ValueError:
                    raise SearchError(f"SerpAPI returned HTTP {response.status_code} with a non-JSON body") from None
                if response.status_code >= 400 and "error" not in payload:
                    payload["error"] = f"HTTP {response.status_code}"
                return payload
            failure = f"SerpAPI returned HTTP {response.status_code}"
        if attempt < retries:
            time.sleep(random.uniform(0, 2**attempt))
    raise SearchError(f"{failure} (after {retries + 1} attempts)")


@task(name="search-serpapi", cache_policy=NO_CACHE)
def search_serpapi(query: str, api_key: SecretStr, num_results: int, results_per_page: int = 10,
                   mode: str = "pdf", endpoint: str = "https://serpapi.com",
                   timeout_s: float = 30.0, retries: int = 2) -> list[SourceRef]:
    """Google results through SerpAPI, paginated until ``num_results`` unique links or no more results.

    ``mode: pdf`` asks for PDFs only (``filetype:pdf``); ``html`` and ``any`` take every result, and
    the downloader keeps what the content says is wanted.
    """
    q = f"{query} filetype:pdf" if mode == "pdf" else query
    key = api_key.get_secret_value()
    refs: list[SourceRef] = []
    seen: set[str] = set()
    start = 0
    while len(refs) < num_results:
        page = _serpapi_page({"q": q, "num": results_per_page, "start": start}, endpoint, key, timeout_s, retries)
        if "error" in page:
            if "hasn't returned any results" in page["error"]:
                break
            raise SearchError(f"SerpAPI error: {_redact(str(page['error']), key)}")
        results = page.get("organic_results") or []
        for result in results:
            link = result.get("link")
            if link and link not in seen:
                seen.add(link)
                refs.append(SourceRef(url=link, title=result.get("title"), source="serpapi"))
                if len(refs) == num_results:
                    break
        if not results or not page.get("serpapi_pagination", {}).get("next"):
            break
        start += len(results)
    return refs


SUFFIXES = {"pdf": (".pdf",), "html": (".html", ".htm", ".xhtml"), "any": (".pdf", ".html", ".htm", ".xhtml")}


@task(name="list-local-sources", cache_policy=NO_CACHE)
def list_local_sources(folder: Path | None, url_file: Path | None,
                       mode: str = "pdf") -> tuple[list[Path], list[SourceRef]]:
    """The mode's files under a folder, recursively (sorted), and URLs of a list file (blank lines and ``#`` skipped).

    Files are picked by their suffix here; what each one really is, its content decides when it is imported.
    """
    files: list[Path] = []
    refs: list[SourceRef] = []
    if folder is not None:
        if not folder.is_dir():
            raise SearchError(f"data_collector.local.dir: folder not found: {folder} "
                              "(for the sample corpus run scripts/setup.sh, or point it at your documents)")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES[mode])
    if url_file is not None:
        if not url_file.is_file():
            raise SearchError(f"data_collector.local.url_file: file not found: {url_file}")
        for line in url_file.read_text(encoding="utf-8").splitlines():
            url = line.strip()
            if url and not url.startswith("#"):
                refs.append(SourceRef(url=url, source="url_list"))
    return files, refs
