"""pdfium, which pypdfium2 wraps, is not thread-safe: two threads inside it at once abort the process.

Stage 2 converts documents on a thread pool, and docling itself calls pdfium under its own
lock, so every call of ours holds that same lock for as long as the document is open.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pypdfium2
from docling.utils.locks import pypdfium2_lock


@contextmanager
def open_pdf(path: Path) -> Iterator[pypdfium2.PdfDocument]:
    """The document, with pdfium to this thread alone until the block ends; raises ``pypdfium2.PdfiumError`` or ``OSError``."""
    with pypdfium2_lock:
        document = pypdfium2.PdfDocument(path)
        try:
            yield document
        finally:
            document.close()
