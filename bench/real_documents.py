"""Benchmark: stages 2–3 on real PDFs and web pages that no one on this project wrote (Debian documentation).

    .venv/bin/python -m bench.real_documents [--folder build/real_pdfs] [--pages build/real_pages]
                                             [--kinds pdf html] [--pairs 30]

Web pages are measured by bench/real_pages.py (the same measures, judged from the raw page's
own headings and the site's repeated text); below, the PDFs.

Measured, each against its goal:
- Section agreement: every chunk's opening words are found in the PDF with pypdfium2 (its own
  text layer, not docling's), giving a page and a height on the page; the outline entries in
  force there (by their destinations) are the truth, and the chunk's deepest section must
  match one of the two deepest of them. Per document and overall, with the outline used
  (goal ≥ 90 %) and withheld (headings from typography and numbering alone; goal ≥ 70 %).
- Noise: share of chunks that are mostly TOC/index lines or repeat a running header/footer,
  both found from pypdfium2's text by rules of this file (goal < 1 %).
- Throughput: pages/s of stage 2's conversion with the configured workers, beside pypdfium2's
  plain text extraction of the same files; and the time heading recovery and cleaning add to
  docling's conversion (goal < 15 %).
- Offline questions: pairs dropped by each rule, and a seeded sample of kept pairs to read.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import re
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pypdfium2

from core.config import DataProcessor, load_config
from harness.project import REPO
from harness.real_corpus import build_real_corpus
from tasks.common.base_models import token_counter
from tasks.common.pdfium import open_pdf
from tasks.common.questions import problem
from tasks.dataset.generate import generate_all, group_chunks
from tasks.llm.calls import CallPolicy, RateLimitedCaller
from tasks.llm.providers import OfflineProvider
from tasks.process.chunk import chunk_markdown
from tasks.process.convert import StepFailed, convert_pdf
from tasks.process.headings import OutlineEntry, read_outline, title_key

GOALS = {"outline": 0.90, "typography": 0.70, "noise": 0.01, "overhead": 0.15}


@dataclass
class PageText:
    keys: str            # letters and digits only, case-folded: robust to hyphenation, ligatures and spacing
    index: list[int]     # position in ``keys`` → pdfium character index
    textpage: pypdfium2.PdfTextPage
    height: float


def _normalise(text: str) -> tuple[str, list[int]]:
    keys, index = [], []
    for position, char in enumerate(text):
        for folded in unicodedata.normalize("NFKC", char).casefold():
            if folded.isalnum():
                keys.append(folded)
                index.append(position)
    return "".join(keys), index


class PdfLocator:
    """Finds where a piece of text stands in a PDF (page, points from the top), reading order first."""

    def __init__(self, path: Path) -> None:
        self.document = pypdfium2.PdfDocument(path)
        self.pages: list[PageText] = []
        for page in self.document:
            textpage = page.get_textpage()
            keys, index = _normalise(textpage.get_text_range())
            self.pages.append(PageText(keys, index, textpage, page.get_height()))

    def find(self, text: str, after: tuple[int, int]) -> tuple[tuple[int, float], tuple[int, int]] | None:
        """((page 1-based, top), cursor) of the first occurrence of ``text``'s opening words at or after ``after``."""
        keys, _ = _normalise(text)
        for length in (60, 40, 25):
            probe = keys[:length]
            if len(probe) < 15:
                return None
            for start_page in (after[0], 0):
                for page_no in range(start_page, len(self.pages)):
                    page = self.pages[page_no]
                    at = page.keys.find(probe, after[1] if page_no == after[0] and start_page == after[0] else 0)
                    if at >= 0:
                        box = page.textpage.get_charbox(page.index[at])
                        return (page_no + 1, page.height - box[3]), (page_no, at + 1)
        return None


def truth_at(outline: list[OutlineEntry], point: tuple[int, float]) -> list[str]:
    """The titles in force at ``point``: the path of the last outline entries (by destination) before it."""
    path: list[OutlineEntry] = []
    for entry in outline:
        if (entry.page, entry.top or 0.0) > (point[0], point[1] + 2):
            continue
        path = [e for e in path if e.level < entry.level] + [entry]
    return [e.title for e in path]


def agrees(section_path: list[str], truth: list[str]) -> bool:
    if not truth:
        return not section_path
    if not section_path:
        return False
    mine = title_key(section_path[-1])
    return any(mine and (mine == title_key(t) or mine.startswith(title_key(t) or "\0")
                         or title_key(t).startswith(mine)) for t in truth[-2:])


# a TOC line's dot leaders to a page, or an index entry's page list ("intersections, 34, 144")
_TOC = re.compile(r"(?:\.\s?){4,}\s*\d{1,4}|(?<=[A-Za-z)]),\s\d{1,4}(?:(?:,\s|–|-)\d{1,4})*(?=\s|$)")


def running_lines(path: Path, band: float = 0.06) -> set[str]:
    """Text lines in the top or bottom ``band`` of the page (the margins) on three pages or more, digits aside."""
    pages: dict[str, set[int]] = defaultdict(set)
    document = pypdfium2.PdfDocument(path)
    try:
        for number, page in enumerate(document):
            width, height = page.get_size()
            textpage = page.get_textpage()
            for bottom, top in ((height * (1 - band), height), (0, height * band)):
                for line in textpage.get_text_bounded(0, bottom, width, top).splitlines():
                    line = " ".join(line.split())
                    if sum(any(c.isalpha() for c in word) for word in line.split()) >= 2:
                        pages[re.sub(r"\d+", "#", line.casefold())].add(number)
    finally:
        document.close()
    return {key for key, seen in pages.items() if len(seen) >= 3}


def is_noise(text: str, running: set[str]) -> bool:
    folded = re.sub(r"\d+", "#", " ".join(text.casefold().split()))
    if any(line in folded for line in running):
        return True
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\s{2,}", text) if s.strip()]
    listing = sum(len(m.group(0)) for m in _TOC.finditer(text))
    return listing > 0.3 * len(text) or (bool(sentences) and sum(bool(_TOC.search(s)) for s in sentences) > len(sentences) / 2)


_NUMBER = re.compile(r"[-+−]?\d+(?:[.,]\d+)?")


def figure_text(text: str) -> str | None:
    """A run in a chunk that reads like text drawn in a figure: four numbers or more evenly spaced (an axis's
    ticks), or one short word four times or more (a logo's letters); the run, or None. (Not stage 2's rule:
    runs anywhere in the chunk, not one PDF line at a time.)"""
    tokens = text.split()
    for start in range(len(tokens) - 3):
        run = tokens[start:start + 4]
        if all(_NUMBER.fullmatch(t) for t in run):
            values = [float(t.replace(",", ".").replace("−", "-")) for t in run]
            steps = {round(b - a, 6) for a, b in itertools.pairwise(values)}
            if len(steps) == 1 and 0 not in steps:
                return " ".join(tokens[max(0, start - 6):start + 10])
        if len(set(run)) == 1 and len(run[0]) <= 2 and run[0].isalpha():
            return " ".join(tokens[max(0, start - 6):start + 10])
    return None


def side_by_side(files: list[Path], convert, plain, workers: int) -> tuple[dict, float, float]:
    """Stage 2's ``convert`` over ``files``, then the naive ``plain`` extraction of those it converted, each with
    ``workers`` threads: the results (a ``StepFailed`` for a failed file) and the seconds each took."""
    def attempt(path: Path):
        try:
            return convert(path)
        except StepFailed as failure:
            return failure

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        converted = dict(zip(files, pool.map(attempt, files), strict=True))
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda f: plain(f) if not isinstance(converted[f], StepFailed) else 0, files))
    return converted, ours_s, time.perf_counter() - started


def pdfium_text(path: Path) -> int:
    with open_pdf(path) as document:
        return sum(len(page.get_textpage().get_text_range()) for page in document)


def measure_pdfs(args: argparse.Namespace) -> tuple[float, float]:
    """Every PDF measure; returns stage 2's pages/s and words/s (the web pages are held to them)."""
    config = load_config(REPO / "configs" / "local.yaml")
    p, g = config.data_processor, config.dataset_generator
    count = token_counter(config.finetuning.base_model, config.finetuning.base_model_gguf)
    files = build_real_corpus(args.folder)
    settings = DataProcessor(converter="native")
    convert_pdf(REPO / "build" / "sample_pdfs" / "01-prenatal-care.pdf", settings)  # build the converter outside timing

    converted, stage_s, pdfium_s = side_by_side(files, lambda path: convert_pdf(path, settings), pdfium_text, p.workers)

    ok = {f: c for f, c in converted.items() if not isinstance(c, StepFailed)}
    pages = sum(c.pages or 0 for c in ok.values())
    steps = Counter()  # step times from one file at a time: with threads, a step's time includes waiting for the GIL
    for f in ok:
        steps.update(convert_pdf(f, settings).timings)

    print(f"real corpus: {len(files)} files, {len(ok)} converted, {pages} pages ({args.folder})")
    for f, c in converted.items():
        if isinstance(c, StepFailed):
            print(f"  {f.name:28s} failed at {c.step}: {str(c)[:90]}")
        else:
            print(f"  {f.name:28s} {c.pages:4d} pages  headings {c.headings:4d} from {c.heading_source}")

    agreement: dict[str, dict[str, tuple[int, int]]] = {"outline": {}, "typography": {}}
    all_chunks = []
    noise = total_chunks = 0
    figures: list[tuple[str, str]] = []
    for path, result in ok.items():
        outline = read_outline(path)
        running = running_lines(path)
        variants = {"outline": result}
        if outline:
            variants["typography"] = convert_pdf(path, settings, use_outline=False)
        locator = PdfLocator(path) if outline else None
        for name, variant in variants.items():
            chunks, _, _ = chunk_markdown(variant.markdown, path.stem, None, count, p.min_tokens, p.max_tokens)
            if name == "outline":
                all_chunks += chunks
                total_chunks += len(chunks)
                noise += sum(is_noise(c.text, running) for c in chunks)
                figures += [(path.name, run) for c in chunks if (run := figure_text(c.text))]
            if locator is None:
                continue
            hits = located = 0
            cursor = (0, 0)
            for chunk in chunks:
                found = locator.find(chunk.text, cursor)
                if found is None:
                    continue
                point, cursor = found
                located += 1
                hits += agrees(chunk.section_path, truth_at(outline, point))
            agreement[name][path.name] = (hits, located, len(chunks))

    print("\nsection agreement (chunk's deepest section vs the outline in force where its opening words stand)")
    for name, label in (("outline", "outline used"), ("typography", "outline withheld: typography + numbering")):
        rows = agreement[name]
        hits = sum(h for h, _, _ in rows.values())
        located = sum(n for _, n, _ in rows.values())
        for doc, (h, n, total) in rows.items():
            print(f"  {label[:16]:16s} {doc:28s} {h / max(1, n):6.1%}  ({h}/{n} located of {total} chunks)")
        share = hits / max(1, located)
        print(f"  {label}: {share:.1%} overall (goal ≥ {GOALS[name]:.0%}: {'met' if share >= GOALS[name] else 'MISSED'})")

    share = noise / max(1, total_chunks)
    print(f"\nnoise: {noise} of {total_chunks} chunks are mostly TOC/index lines or repeat a running header/footer: "
          f"{share:.2%} (goal < {GOALS['noise']:.0%}: {'met' if share < GOALS['noise'] else 'MISSED'})")

    print(f"figure text: {len(figures)} of {total_chunks} chunks hold a run of evenly spaced numbers or of one "
          f"repeated letter: {len(figures) / max(1, total_chunks):.2%} (read them: a file format's example counts too)")
    for name, run in figures[:8]:
        print(f"  {name}: …{run}…")

    overhead = (steps["headings"] + steps["cleaning"]) / max(1e-9, steps["conversion"])
    words = sum(len(c.markdown.split()) for c in ok.values())
    print(f"\nthroughput with {p.workers} workers: stage 2 {pages / stage_s:.1f} pages/s ({words / stage_s:.0f} words "
          f"of Markdown/s, {words / pages:.0f} a page), pypdfium2 plain text "
          f"{pages / pdfium_s:.1f} pages/s: ratio {pdfium_s / stage_s:.3f}")
    print(f"  one file at a time: heading recovery {steps['headings']:.2f} s + cleaning {steps['cleaning']:.2f} s "
          f"on top of docling's conversion {steps['conversion']:.2f} s: +{overhead:.1%} (goal < {GOALS['overhead']:.0%}: "
          f"{'met' if overhead < GOALS['overhead'] else 'MISSED'})")

    offline_questions(all_chunks, g, args.pairs)
    return pages / stage_s, words / stage_s


def offline_questions(chunks: list, g, show: int) -> list:
    """Stage 3's offline generator on ``chunks``: pairs written, dropped by rule, and ``show`` kept pairs to read."""
    groups = group_chunks(chunks, g.max_tokens)
    policy = CallPolicy.of(g)
    caller = RateLimitedCaller(OfflineProvider(), policy)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        results = asyncio.run(generate_all(groups, caller, Path(cache), "software documentation",
                                           g.questions_per_group, g.min_answer_overlap))
        generation_s = time.perf_counter() - started
    dropped = sum((Counter(r.dropped) for r in results), Counter())
    kept = []
    for pair in (pair for r in results for pair in r.pairs):  # the checks stage 3 applies to every provider's pairs
        if reason := problem(pair.question, pair.answer):
            dropped[reason] += 1
        else:
            kept.append(pair)
    made = len(kept) + sum(v for k, v in dropped.items() if k not in ("no_valid_pairs", "empty_reply"))
    print(f"\noffline questions: {len(groups)} groups in {generation_s:.1f} s (no rate limit), {made} pairs written, "
          f"{len(kept)} kept")
    for reason, n in sorted(dropped.items()):
        unit = "groups" if reason in ("no_valid_pairs", "empty_reply") else "pairs"
        base = len(groups) if unit == "groups" else made
        print(f"  dropped {reason:20s} {n:5d} {unit}  ({n / max(1, base):.1%})")
    print(f"\n{min(show, len(kept))} random kept pairs (seed 0):")
    for pair in random.Random(0).sample(kept, min(show, len(kept))):
        print(f"  [{pair.type}] Q: {pair.question}\n          A: {pair.answer[:160]}")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=REPO / "build" / "real_pdfs")
    parser.add_argument("--pages", type=Path, default=REPO / "build" / "real_pages")
    parser.add_argument("--kinds", nargs="+", choices=("pdf", "html"), default=["pdf", "html"])
    parser.add_argument("--pairs", type=int, default=30)
    args = parser.parse_args()
    pdf_rates = measure_pdfs(args) if "pdf" in args.kinds else None
    if "html" in args.kinds:
        from bench.real_pages import measure_pages  # it borrows this file's locator rules

        measure_pages(args, pdf_rates)


if __name__ == "__main__":
    main()
