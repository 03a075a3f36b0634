"""Benchmark: stage 2–3 on real web pages no one on this project wrote (three Debian documentation sites).

    .venv/bin/python -m bench.real_documents --kinds html      # or both kinds, side by side

Measured, each against its goal (issue 26), from the raw pages, never from our converter:
- Section agreement: every chunk's opening words are found in the raw page's text (lxml's own
  walk of the page, navigation included); the page's ``<h1>``–``<h6>`` in force there are the
  truth, and the chunk's deepest section must match one of the two deepest (goal ≥ 95 %).
- Boilerplate: text blocks repeated across a site's pages (on half its pages or more, at
  least three) are the site's boilerplate; a chunk holding any of them counts (goal < 1 %).
- Throughput: pages/s of conversion + cleaning with the configured workers, beside lxml's plain
  text of the same pages, and beside the PDFs' pages/s when they were measured in the same run.
- Bad pages: each one's recorded outcome and reason (goal: every one recorded, none stops the run).
- QA pairs per page from the offline generator.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import lxml.html
from lxml import etree

from bench.real_documents import _normalise, agrees, offline_questions, side_by_side
from core.config import DataProcessor, load_config
from harness.project import REPO
from harness.real_corpus import build_real_pages
from tasks.collect.download import import_local_file
from tasks.common.base_models import token_counter
from tasks.process.chunk import chunk_markdown
from tasks.process.convert import StepFailed, convert_document, convert_html

GOALS = {"sections": 0.95, "boilerplate": 0.01}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = ("p", "li", "dt", "dd", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "a", "div", "span", "caption")
_SKIP = {"script", "style", "noscript", "template"}


class PageLocator:
    """The raw page's text in reading order, with the headings in force at each position."""

    def __init__(self, raw: bytes) -> None:
        tree = lxml.html.fromstring(raw)
        self.keys = ""
        self.headings: list[tuple[int, int, str]] = []  # (position in keys, level, title)
        self._walk(tree)

    def _add(self, text: str | None) -> None:
        if text:
            self.keys += _normalise(text)[0]

    def _walk(self, element: etree._Element) -> None:
        if not isinstance(element.tag, str) or element.tag in _SKIP:
            self._add(element.tail if isinstance(element.tag, str) else None)
            return
        if element.tag in _HEADINGS:
            self.headings.append((len(self.keys), _HEADINGS[element.tag], " ".join(element.text_content().split())))
        self._add(element.text)
        for child in element:
            self._walk(child)
        self._add(element.tail)

    def find(self, text: str, cursor: int) -> int | None:
        keys, _ = _normalise(text)
        for length in (60, 40, 25):
            probe = keys[:length]
            if len(probe) < 15:
                return None
            for start in (cursor, 0):
                at = self.keys.find(probe, start)
                if at >= 0:
                    return at
        return None

    def truth_at(self, position: int) -> list[str]:
        path: list[tuple[int, str]] = []
        for at, level, title in self.headings:
            if at > position:
                break
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
        return [title for _, title in path]


def site_boilerplate(pages: list[Path]) -> set[str]:
    """Normalised text blocks (20+ letters) found on half a site's pages or more, and on three at least."""
    seen: dict[str, set[int]] = defaultdict(set)
    for number, page in enumerate(pages):
        tree = lxml.html.fromstring(page.read_bytes())
        for element in tree.iter(*_BLOCKS):
            keys = _normalise(element.text_content())[0]
            if 20 <= len(keys) <= 2000:
                seen[keys].add(number)
    needed = max(3, (len(pages) + 1) // 2)
    return {keys for keys, where in seen.items() if len(where) >= needed}


def measure_pages(args: argparse.Namespace, pdf_rates: tuple[float, float] | None) -> None:
    config = load_config(REPO / "configs" / "local.yaml")
    p, g = config.data_processor, config.dataset_generator
    count = token_counter(config.finetuning.base_model, config.finetuning.base_model_gguf)
    written = build_real_pages(args.pages)
    bad = [page for page in written if page.parent.name == "bad"]
    pages = [page for page in written if page not in bad]
    settings = DataProcessor(converter="native")
    convert_html(pages[0], settings)  # build the converter outside timing

    converted, stage_s, plain_s = side_by_side(pages, lambda path: convert_html(path, settings),
                                               lambda f: lxml.html.fromstring(f.read_bytes()).text_content(), p.workers)
    size_kb = sum(page.stat().st_size for page in pages) / 1024

    sites = sorted({page.parent.relative_to(args.pages).parts[0] for page in pages})
    print(f"\nreal web pages: {len(pages)} pages from {len(sites)} sites ({', '.join(sites)}), {size_kb:.0f} KiB "
          f"({args.pages})")
    agreement: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    boilerplate: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    all_chunks = []
    for site in sites:
        site_pages = [page for page in pages if page.relative_to(args.pages).parts[0] == site]
        repeated = site_boilerplate(site_pages)
        for page in site_pages:
            result = converted[page]
            if isinstance(result, StepFailed):
                print(f"  {site}/{page.name}: failed at {result.step}: {str(result)[:90]}")
                continue
            chunks, _, _ = chunk_markdown(result.markdown, page.stem, None, count, p.min_tokens, p.max_tokens)
            all_chunks += chunks
            locator = PageLocator(page.read_bytes())
            cursor = 0
            row = agreement[site]
            for chunk in chunks:
                row[2] += 1
                keys = _normalise(chunk.text)[0]
                boilerplate[site][1] += 1
                boilerplate[site][0] += any(block in keys for block in repeated)
                at = locator.find(chunk.text, cursor)
                if at is None:
                    continue
                cursor = at + 1
                row[1] += 1
                row[0] += agrees(chunk.section_path, locator.truth_at(at))

    print("section agreement (chunk's deepest section vs the page's own headings where its opening words stand)")
    for site, (hits, located, total) in agreement.items():
        print(f"  {site:10s} {hits / max(1, located):6.1%}  ({hits}/{located} located of {total} chunks)")
    hits = sum(h for h, _, _ in agreement.values())
    located = sum(n for _, n, _ in agreement.values())
    share = hits / max(1, located)
    print(f"  web pages: {share:.1%} overall (goal ≥ {GOALS['sections']:.0%}: "
          f"{'met' if share >= GOALS['sections'] else 'MISSED'})")

    print("boilerplate (chunks holding text repeated on half a site's pages or more)")
    for site, (flagged, total) in boilerplate.items():
        print(f"  {site:10s} {flagged} of {total} chunks")
    flagged = sum(f for f, _ in boilerplate.values())
    total = sum(t for _, t in boilerplate.values())
    share = flagged / max(1, total)
    print(f"  web pages: {share:.2%} (goal < {GOALS['boilerplate']:.0%}: {'met' if share < GOALS['boilerplate'] else 'MISSED'})")

    html_rate = len(pages) / stage_s
    words = sum(len(c.markdown.split()) for c in converted.values() if not isinstance(c, StepFailed))
    print(f"throughput with {p.workers} workers: conversion + cleaning {html_rate:.1f} pages/s "
          f"({words / stage_s:.0f} words of Markdown/s, {words / len(pages):.0f} a page; {size_kb / stage_s:.0f} KiB/s), "
          f"lxml plain text {len(pages) / plain_s:.1f} pages/s: ratio {plain_s / stage_s:.3f}")
    if pdf_rates:
        pdf_pages, pdf_words = pdf_rates
        print(f"  web pages vs PDF pages in this run: {html_rate:.1f} vs {pdf_pages:.1f} pages/s = "
              f"{html_rate / pdf_pages:.2f}× (goal ≥ 1: {'met' if html_rate >= pdf_pages else 'MISSED'}); "
              f"per word of text {words / stage_s:.0f} vs {pdf_words:.0f} words/s = {words / stage_s / pdf_words:.2f}×")

    print("bad pages (collected and converted as stage 1 and 2 do, mode any):")
    with tempfile.TemporaryDirectory() as tmp:
        for page in bad:
            document = import_local_file(page, Path(tmp) / "raw", max_bytes=50 * 2**20, mode="any")
            if document.status != "ok":
                print(f"  {page.name:15s} stage 1: {document.status}: {document.error}")
                continue
            raw = Path(tmp) / "raw" / f"{document.sha256}.html"
            outcome = convert_document.fn(raw, Path(tmp) / f"{document.sha256}.md", settings, "html")
            print(f"  {page.name:15s} stage 2: {outcome.status}" + (f" at {outcome.step}: {outcome.error}"
                                                                     if outcome.error else f", {outcome.headings} headings"))

    kept = offline_questions(all_chunks, g, min(args.pairs, 10))
    print(f"QA pairs per page: {len(kept) / len(pages):.1f} ({len(kept)} kept from {len(pages)} pages)")
