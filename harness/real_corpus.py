"""Corpora of real PDFs and web pages that no one on this project wrote: documentation from Debian packages.

The sample corpus is rendered by the project itself (clean text, a perfect outline), so it
cannot show how stages 2–3 behave on documents from elsewhere. These come from Debian's
documentation packages, fetched with ``apt-get download`` the first time and cached
outside the repository (never committed), plus two broken files a crawler meets: a
truncated copy of a real PDF and an HTML page saved as ``.pdf``.

The web pages come from three sites built by three generators (DocBook XSL, AsciiDoc, Sphinx),
each page's own ``<h1>``–``<h6>`` the truth for its sections, plus the bad pages a crawler
meets: a truncated page, an empty one, a page that only redirects, a login wall, and a
binary saved as ``.html``.

    python -m harness.real_corpus DIR [--html]   # fetch (cached) and write the corpus into DIR
"""

from __future__ import annotations

import gzip
import io
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
@dataclass(frozen=True)
class Site:
    package: str
    folder: str               # where the pages are inside the package
    pages: tuple[str, ...]
    name: str                 # the generator: the site's folder in the corpus


SITES = (
    Site("debian-reference-en", "usr/share/debian-reference", tuple(
        f"{name}.en.html" for name in ("pr01", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "apa")), "docbook"),
    Site("git-doc", "usr/share/doc/git-doc", tuple(
        f"{name}.html" for name in ("git-add", "git-bisect", "git-blame", "git-branch", "git-clone", "git-commit",
                                    "git-mv", "git-reset", "git-revert", "git-rm", "git-stash", "git-tag",
                                    "gitignore", "git-merge")), "asciidoc"),
    Site("sphinx-doc", "usr/share/doc/sphinx-doc/html", (
        "faq.html", "glossary.html", "templating.html", "support.html", "examples.html", "man/sphinx-build.html",
        "man/sphinx-quickstart.html", "man/sphinx-apidoc.html", "tutorial/getting-started.html",
        "tutorial/first-steps.html", "tutorial/narrative-documentation.html", "tutorial/describing-code.html",
        "tutorial/automatic-doc-generation.html", "tutorial/deploying.html", "usage/extensions/autosectionlabel.html",
        "usage/advanced/intl.html", "development/theming.html", "extdev/logging.html"), "sphinx"),
)
# the bad pages: name → how it is made
BAD_PAGES = ("truncated.html", "empty.html", "redirect.html", "login.html", "binary.html")
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


def _unpack(package: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(_deb(package)), str(into)], check=True)
    return into


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, target)


def _png(width: int = 64, height: int = 64) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def build_real_pages(folder: Path, per_site: int | None = None) -> list[Path]:
    """Write the web pages into ``folder/<generator>/`` (``per_site`` pages from each, or all) and the bad
    pages into ``folder/bad/``; returns every page written, bad ones included."""
    written: list[Path] = []
    for site in SITES:
        pages = site.pages[:per_site]
        targets = [folder / site.name / page for page in pages]
        if not all(t.is_file() for t in targets):
            with tempfile.TemporaryDirectory() as tmp:
                root = _unpack(site.package, Path(tmp)) / site.folder
                for page, target in zip(pages, targets, strict=True):
                    _write(target, (root / page).read_bytes())
        written += targets
    bad = folder / "bad"
    sample = (folder / "sphinx" / SITES[2].pages[0])
    if not sample.is_file():
        build_real_pages(folder, per_site=1)
    data = sample.read_bytes()
    _write(bad / "truncated.html", data[: int(len(data) * 0.6)])  # cut mid-page: no closing tags
    _write(bad / "empty.html", b"")
    _write(bad / "redirect.html", b'<!DOCTYPE html><html><head><meta http-equiv="refresh" content="0; '
                                  b'url=https://docs.example.org/new/"><title>Moved</title></head>'
                                  b'<body><p>Redirecting&hellip;</p></body></html>')
    _write(bad / "login.html", b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>"
                               b"<header><nav><a href='/'>Home</a></nav></header><main><h1>Sign in</h1>"
                               b"<form><label>Email <input name=email></label><label>Password <input type=password>"
                               b"</label><button>Sign in</button></form><p>Forgot your password?</p></main>"
                               b"<footer>&copy; Example Corp</footer></body></html>")
    _write(bad / "binary.html", _png())
    return written + [bad / name for name in BAD_PAGES]


if __name__ == "__main__":
    target = Path(next((a for a in sys.argv[1:] if not a.startswith("--")), "build/real_pdfs"))
    for path in (build_real_pages(target) if "--html" in sys.argv else build_real_corpus(target)):
        print(path)
