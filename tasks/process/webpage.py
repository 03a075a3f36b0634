"""Keep what a web page says, not the site around it: an HTML page's main content, for docling.

Every page of a site repeats its navigation, menus, header and footer, cookie banner and
"previous / next" bars; left in, they would be chunked, asked about and learned, once per
page. Pages name these parts in three ways, read here in order: HTML5 elements (``nav``,
``header``, ``footer``, ``aside``) and ARIA roles; the class and id names that site
generators give the same parts (Sphinx's ``sphinxsidebar`` and ``related``, DocBook's
``navheader``/``navfooter``, ``toc``, ``breadcrumb``, ``cookie``…); and a page's single
``main`` (or ``role=main``) element, which is its content when there is one. Whatever holds
the page's ``<h1>`` is kept (some generators put the title inside a ``header``), and so is
whatever stands inside a heading (Sphinx wraps heading text in a ``toc-backref`` link).

Measured on Debian's HTML documentation (Sphinx, DocBook, AsciiDoc): docling's HTML backend
on a whole page kept the sidebar and "On this page" lists; trafilatura, the known boilerplate
remover, lost DocBook's headings (14 of a chapter's 14 became 1) and most code blocks. docling
on the content kept here keeps headings, tables and code, and the nav does not reach it.
Code blocks lose their highlighting markup first: docling joins a ``<pre>``'s ``<span>``s with
spaces and loses its line breaks. docling files text before a page's first ``<h1>`` as page
furniture and leaves it out of Markdown; what is furniture was decided here, so stage 2 keeps it.
"""

from __future__ import annotations

import re

import lxml.html
from lxml import etree

_NOT_CONTENT = ("script", "style", "noscript", "template", "svg", "iframe", "object", "embed", "canvas", "form",
                "button", "select", "input", "textarea", "img", "picture", "video", "audio", "link", "meta")
_SITE_PARTS = ("nav", "header", "footer", "aside")
_ROLES = {"navigation", "banner", "contentinfo", "search", "complementary", "menu", "menubar", "dialog"}
_SITE_NAMES = re.compile(
    r"(?:^|[-_])(?:nav|navbar|navigation|menu|menubar|sidebar|sphinxsidebar|sphinxsidebarwrapper|related|"
    r"breadcrumbs?|footer|navheader|navfooter|cookies?|consent|gdpr|banner|skip|skiplink|toc|searchbox|search|"
    r"share|social|pagination|pager|prev|next|headerlink|edit-?link|feedback|advert|ads?)(?:$|[-_])",
    re.IGNORECASE)
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_HIDDEN = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)


class EmptyPage(ValueError):
    """The page holds no content at all (no bytes, or markup with no body)."""


def _parse(raw: bytes) -> etree._Element:
    try:  # control bytes are not text (and lxml refuses them where text is set)
        return lxml.html.fromstring(_CONTROL.sub(b"", raw))
    except (etree.ParserError, ValueError) as error:
        raise EmptyPage(f"no HTML content ({error})") from None


def _is_site_part(element: etree._Element) -> bool:
    if element.tag in _SITE_PARTS or element.get("role") in _ROLES:
        return True
    if element.get("hidden") is not None or element.get("aria-hidden") == "true" or _HIDDEN.search(element.get("style") or ""):
        return True
    names = (element.get("class") or "").split() + (element.get("id") or "").split()
    return any(_SITE_NAMES.search(name) for name in names)


def _in_heading(element: etree._Element) -> bool:
    """A link inside a heading (Sphinx's ``toc-backref``) is the heading's text, whatever its class says."""
    return any(ancestor.tag in _HEADINGS for ancestor in element.iterancestors())


def redirect_target(raw: bytes) -> str | None:
    """Where a ``<meta http-equiv="refresh">`` page sends its reader, if it is one."""
    try:
        tree = _parse(raw)
    except EmptyPage:
        return None
    for meta in tree.iter("meta"):
        if (meta.get("http-equiv") or "").lower() == "refresh":
            found = re.search(r"url\s*=\s*['\"]?([^'\";]+)", meta.get("content") or "", re.IGNORECASE)
            return found.group(1).strip() if found else ""
    return None


def main_content(raw: bytes) -> bytes:
    """The page reduced to its main content, as HTML; ``EmptyPage`` when there is nothing to read.

    Its ``<title>`` is left out: stage 1 records it, and docling would write it as a heading of its own.
    """
    tree = _parse(raw)
    for element in list(tree.iter(etree.Comment, etree.ProcessingInstruction, *_NOT_CONTENT)):
        if element.getparent() is not None:
            element.drop_tree()
    for element in list(tree.iter()):
        if element.getparent() is not None and isinstance(element.tag, str) and _is_site_part(element) \
                and not any(True for _ in element.iter("h1")) and not _in_heading(element):
            element.drop_tree()
    for pre in tree.iter("pre"):
        text = pre.text_content()
        for child in list(pre):
            pre.remove(child)
        pre.text = text
    main = tree.xpath("//main | //*[@role='main']")
    body = tree.find(".//body")
    root = main[0] if len(main) == 1 else body if body is not None else tree
    page = etree.Element("html")
    head = etree.SubElement(page, "head")
    etree.SubElement(head, "meta", charset="utf-8")
    content = etree.SubElement(page, "body")
    if root is body:
        content.text = body.text
        content.extend(list(body))
    else:
        root.tail = None
        content.append(root)
    return etree.tostring(page, encoding="utf-8", method="html")
