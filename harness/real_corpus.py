"""A corpus of real PDFs that no one on this project wrote: documentation from Debian packages.

The sample corpus is rendered by the project itself (clean text, a perfect outline), so it
cannot show how stages 2–3 behave on documents from elsewhere. These come from Debian's
documentation packages, fetched with ``apt-get download`` the first time and cached
outside the repository (never committed), plus two broken files a crawler meets: a
truncated copy of a real PDF and an HTML page saved as ``.pdf``.

    python -m harness.real_corpus DIR      # fetch (cached) and write the corpus into DIR
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("REAL_CORPUS_CACHE", Path.home() / ".cache" / "domain-llm-pipeline" / "debian-docs"))


@dataclass(frozen=True)
class Source:
    package: str
    member: str  # path inside the package; a .gz is unpacked
    name: str    # file name in the corpus


SOURCES = (
    Source("freefem-doc", "usr/share/doc/freefem-doc/freefem.pdf", "freefem.pdf"),
    Source("gmsh-doc", "usr/share/doc/gmsh-doc/gmsh.pdf.gz", "gmsh.pdf"),
    Source("octave-doc", "usr/share/doc/octave/liboctave.pdf", "liboctave.pdf"),
    Source("octave-doc", "usr/share/doc/octave/refcard-a4.pdf", "octave-refcard-a4.pdf"),
    Source("maxima-doc", "usr/share/doc/maxima-doc/maximabook-19-Sept-2004.pdf.gz", "maximabook.pdf"),
    Source("docbook-xsl-doc-pdf", "usr/share/doc/docbook-xsl-doc-pdf/doc/reference.pdf.gz", "docbook-xsl-reference.pdf"),
    Source("libtasn1-doc", "usr/share/doc/libtasn1-doc/libtasn1.pdf", "libtasn1.pdf"),
)
TRUNCATED = "freefem-truncated.pdf"   # the first 40 % of freefem.pdf: no cross-reference table, no trailer
HTML_AS_PDF = "error-page.pdf"        # what a web server sends instead of a PDF, saved under a .pdf name


class CorpusUnavailable(Exception):
    """apt-get could not fetch a package (no Debian mirror in reach)."""


def _deb(package: str) -> Path:
    found = sorted(CACHE.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        # apt-get download writes into the working directory; a temporary one keeps a half-written .deb out of the cache
        done = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0 and os.geteuid() == 0:  # a fresh machine has no package lists yet
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            done = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob(f"{package}_*.deb"))
        if done.returncode != 0 or not debs:
            raise CorpusUnavailable(f"apt-get download {package} failed: {(done.stderr or done.stdout).strip()[-300:]} "
                                    "(run `apt-get update` first; needs Debian's package mirror)")
        os.replace(debs[0], CACHE / debs[0].name)
    return _deb(package)


def _extract(source: Source, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(_deb(source.package)), tmp], check=True)
        member = Path(tmp) / source.member
        partial = target.with_suffix(".part")
        with (gzip.open(member) if member.suffix == ".gz" else member.open("rb")) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(partial, target)


def build_real_corpus(folder: Path) -> list[Path]:
    """Write the corpus into ``folder`` (reusing files already there); returns the PDFs, broken ones included."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in SOURCES:
        if not (folder / source.name).is_file():
            _extract(source, folder / source.name)
    data = (folder / "freefem.pdf").read_bytes()
    (folder / TRUNCATED).write_bytes(data[: int(len(data) * 0.4)])
    (folder / HTML_AS_PDF).write_text("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                                      "<body><h1>Not Found</h1><p>The requested URL was not found.</p></body></html>\n")
    return sorted(folder.glob("*.pdf"))


if __name__ == "__main__":
    for path in build_real_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "build/real_pdfs")):
        print(path)
