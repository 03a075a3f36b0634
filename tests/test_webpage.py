"""Stage 2 on web pages: main content only, the page's own sections, code and tables kept; bad pages recorded."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import DataProcessor
from tasks.process.chunk import split_sections
from tasks.process.convert import convert_document, convert_html
from tasks.process.webpage import main_content

NATIVE = DataProcessor(converter="native")
SITE = "navmarker footmarker asidemarker cookiemarker breadmarker pagermarker".split()

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Storage &amp; Care | Example Docs</title>
<script>var navmarker = 1;</script><style>.x { color: red }</style></head>
<body>
<div class="cookie-banner">cookiemarker We use cookies. <button>Accept</button></div>
<header class="site-header"><a href="/">Example Docs</a> <nav><a href="/a">navmarker Guides</a></nav></header>
<div class="breadcrumbs">breadmarker Home › Guides</div>
<div class="layout">
<aside class="sidebar"><h3>On this page</h3><ul><li>asidemarker Storage</li></ul></aside>
<main>
<h1>Storing breast milk<a class="headerlink" href="#s">¶</a></h1>
<p>Freshly expressed milk keeps for up to <b>four hours</b> at room temperature &amp; for four days in a
<a href="/fridge">fridge</a> at 4 °C or colder.</p>
<h2><a class="toc-backref" href="#t">Freezing</a></h2>
<p>Frozen milk keeps for six months; thaw it in the fridge, never in a microwave.</p>
<div class="highlight"><pre><span class="k">label</span> <span class="s">"date"</span>
<span class="k">freeze</span> --at -18

<span class="k">thaw</span> --in fridge</pre></div>
<h3>Quantities</h3>
<table><tr><th>Age</th><th>Millilitres per feed</th></tr><tr><td>1 week</td><td>60&ndash;90</td></tr>
<tr><td>1 month</td><td>90&ndash;120</td></tr></table>
<ul><li>Label every container with the date it was expressed.</li>
<li>Use the oldest milk first.</li></ul>
</main>
</div>
<div class="related-pages">pagermarker « Previous: Feeding | Next: Weaning »</div>
<footer><p>footmarker © Example Health Service. All rights reserved.</p></footer>
</body></html>
"""


def test_a_page_keeps_its_content_sections_code_and_tables_and_nothing_of_the_site(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(PAGE, encoding="utf-8")
    markdown = convert_html(page, NATIVE).markdown
    assert not [marker for marker in SITE if marker in markdown], markdown
    sections = {tuple(path): body for path, body in split_sections(markdown)}
    assert list(sections) == [("Storing breast milk",), ("Storing breast milk", "Freezing"),
                              ("Storing breast milk", "Freezing", "Quantities")]
    first = sections[("Storing breast milk",)]
    assert "four hours** at room temperature & for four days in a fridge at 4 °C" in first  # entity, link text kept
    assert "```\nlabel \"date\"\nfreeze --at -18\nthaw --in fridge\n```" in sections[("Storing breast milk", "Freezing")]
    table = sections[("Storing breast milk", "Freezing", "Quantities")]
    # docling writes the dash as -
    assert "| Age | Millilitres per feed |\n|---|---|\n| 1 week | 60-90 |\n| 1 month | 90-120 |" in table
    assert "- Label every container with the date it was expressed.\n- Use the oldest milk first." in table


def test_a_title_inside_a_header_element_is_kept(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html><body><div id='header'><h1>git-rm(1)</h1></div><nav>navmarker</nav>"
                    "<h2>NAME</h2><p>git-rm - Remove files from the working tree and from the index of the "
                    "repository, leaving the files on disk when asked to.</p></body></html>")
    markdown = convert_html(page, NATIVE).markdown
    assert markdown.startswith("# git-rm(1)\n\n## NAME\n\ngit-rm - Remove files") and "navmarker" not in markdown


@pytest.mark.parametrize(("body", "reason"), [
    (b'<html><head><meta http-equiv="refresh" content="0; URL=\'https://docs.example.org/new/\'"></head>'
     b"<body>Redirecting&hellip;</body></html>", "only a redirect (to https://docs.example.org/new/)"),
    (b"<html><body><nav>Home</nav><main><h1>Sign in</h1><form><input name=u><button>Go</button></form>"
     b"<p>Forgot your password?</p></main></body></html>", "words of main content: a login wall"),
    (b"<html><head><title>App</title><script>render()</script></head><body><div id=root></div></body></html>",
     "0 words of main content"),
])
def test_a_page_with_no_document_in_it_is_failed_with_its_reason(tmp_path, body, reason):
    page = tmp_path / "abc.html"
    page.write_bytes(body)
    record = convert_document.fn(page, tmp_path / "abc.md", NATIVE, "html")
    assert (record.status, record.kind, record.step) == ("failed", "html", "cleaning")
    assert reason in record.error and not (tmp_path / "abc.md").exists()


def test_an_empty_file_is_a_conversion_failure_not_a_crash(tmp_path):
    page = tmp_path / "abc.html"
    page.write_bytes(b"   ")
    record = convert_document.fn(page, tmp_path / "abc.md", NATIVE, "html")
    assert (record.status, record.step) == ("failed", "conversion") and "no HTML content" in record.error


# generated pages: sections, paragraphs, tables (a heading inside one too), code, entities; closing tags left out
WORD = st.text(alphabet=string.ascii_lowercase, min_size=3, max_size=9)
TEXT = st.lists(WORD, min_size=4, max_size=14).map(" ".join)
ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&eacute;": "é", "&#8212;": "-"}  # docling writes dashes as -


@st.composite
def pages(draw):
    blocks, expected = [], []
    close = draw(st.booleans())
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["section", "paragraph", "table", "code", "entity"]))
        text = draw(TEXT)
        if kind == "section":  # a heading with text under it (an empty section is dropped, rightly)
            level, body = draw(st.integers(1, 4)), draw(TEXT)
            blocks.append(f"<h{level}>{text}</h{level}><p>{body}</p>")
            expected += [("heading", level, text), ("text", body)]
        elif kind == "paragraph":
            blocks.append(f"<p>{text}</p>" if close else f"<p>{text}")
            expected.append(("text", text))
        elif kind == "table":
            heading = draw(TEXT)
            blocks.append(f"<table><tr><td><h3>{heading}</h3></td><td>{text}</td></tr></table>")
            expected += [("text", heading), ("text", text)]
        elif kind == "code":
            lines = draw(st.lists(WORD, min_size=2, max_size=5))
            blocks.append("<pre>" + "\n".join(f"<span>{line}</span> --x" for line in lines) + "</pre>")
            expected.append(("code", [f"{line} --x" for line in lines]))
        else:
            entity = draw(st.sampled_from(sorted(ENTITIES)))
            blocks.append(f"<p>{text} {entity} {text}</p>")
            expected.append(("text", f"{text} {ENTITIES[entity]} {text}"))
    html = ("<html><head><title>t</title></head><body><nav>navmarker menu</nav><div class='sidebar'>asidemarker</div>"
            f"<div class='content'>{''.join(blocks)}</div><footer>footmarker</footer></body></html>")
    return html, expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pages())
def test_generated_pages_keep_every_text_heading_and_code_line_and_no_site_part(tmp_path, page):
    html, expected = page
    path = tmp_path / "generated.html"
    path.write_text(html, encoding="utf-8")
    markdown = convert_html(path, NATIVE).markdown
    flat = " ".join(markdown.split())
    assert not [marker for marker in SITE if marker in markdown], markdown
    assert "&amp;" not in markdown and "&lt;" not in markdown
    lines = markdown.splitlines()
    for item in expected:
        if item[0] == "heading":
            assert "#" * item[1] + " " + item[2] in lines, (item, markdown, html)
        elif item[0] == "text":
            assert item[1] in flat, (item, markdown, html)
        else:
            assert re.search(r"```\n" + r"\n".join(map(re.escape, item[1])) + r"\n```", markdown), (item, markdown)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(lambda t: f"<html><body>{t}".encode()))
def test_any_bytes_give_content_or_a_clear_refusal_never_a_crash(raw):
    try:
        main_content(raw)
    except ValueError as error:  # EmptyPage: recorded as the document's failure
        assert "no HTML content" in str(error)


def test_docling_sees_only_the_main_content():
    content = main_content(PAGE.encode()).decode()
    assert "Storing breast milk" in content and "<pre>" in content and "<span" not in content
    assert not [marker for marker in SITE if marker in content]
    assert "<title>" not in content  # stage 1 keeps the title; docling would make it a heading
