"""Benchmark: pages/s of the local profile's docling pipeline vs plain pypdfium2 text extraction.

    .venv/bin/python -m bench.conversion [--copies 8]

Both read the same PDFs: the sample corpus, plus one long document made of every sample
text repeated ``copies`` times, plus any PDFs given with --pdf. pypdfium2 only extracts
text (no structure, no headings, no cleaning), so it is the lower bound of the work.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pypdfium2

from tasks.convert import ConverterSettings, convert_pdf
from tasks.download import count_pages
from tasks.sample_corpus import build_corpus, render_pdf
from tests.conftest import REPO


def pdfium_text(path: Path) -> int:
    document = pypdfium2.PdfDocument(path)
    try:
        return sum(len(page.get_textpage().get_text_range()) for page in document)
    finally:
        document.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--pdf", type=Path, action="append", default=[])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = build_corpus(REPO / "sample_corpus", folder)
        texts = [p.read_text() for p in sorted((REPO / "sample_corpus").glob("*.md"))]
        header, _, _ = texts[0].partition("\n# ")
        bodies = ["# " + t.split("\n# ", 1)[1] for t in texts]
        long_md = header + "\n" + "\n\n".join(bodies * args.copies)
        (folder / "long.pdf").write_bytes(render_pdf(long_md))
        files = [*files, folder / "long.pdf", *args.pdf]
        pages = sum(count_pages(p) or 0 for p in files)

        settings = ConverterSettings(kind="native")
        convert_pdf(files[0], settings)  # build the converter once, outside the timing
        started = time.perf_counter()
        for path in files:
            convert_pdf(path, settings)
        docling_s = time.perf_counter() - started

        started = time.perf_counter()
        for path in files:
            pdfium_text(path)
        pdfium_s = time.perf_counter() - started

    print(f"conversion: {len(files)} PDFs, {pages} pages")
    print(f"  docling native + heading recovery  {pages / docling_s:8.1f} pages/s")
    print(f"  pypdfium2 plain text               {pages / pdfium_s:8.1f} pages/s")
    print(f"  ratio docling / pypdfium2: {pdfium_s / docling_s:.3f}"
          f"  (plain extraction is {docling_s / pdfium_s:.0f}x faster but yields no structure, headings or cleaning)")


if __name__ == "__main__":
    main()
