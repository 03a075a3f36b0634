"""Each cleaning rule on snippets as docling emits them from real PDFs (Debian's manuals, see harness/real_corpus.py)."""

from __future__ import annotations

import pytest

from tasks.process.clean import (
    clean_markdown,
    drop_empty_sections,
    drop_page_furniture,
    fix_characters,
    is_figure_text,
    is_page_number,
    is_photo_credit,
    is_toc_line,
    join_wrapped_lines,
    remove_image_tags,
)
from tasks.process.layout import Line


def line(text: str, page: int, top: float, heading: int = 0) -> Line:
    return Line(text=text, page=page, top=top, height=10, left=90, bottom_pdf=700 - top, heading=heading)


def test_image_tags_are_removed():
    assert remove_image_tags("<!-- image -->") == ""
    assert remove_image_tags("See the figure ![Plate showing a meal](figures/plate.png) below.") == "See the figure  below."


def test_page_numbers():
    for line in ["2", "17", "Page 3", "page 4 of 12", "12 / 40", "iv", "xii"]:
        assert is_page_number(line), line
    for line in ["2 Screening Tests", "40 weeks", "Page three", "1,000"]:
        assert not is_page_number(line), line


def test_toc_dot_leaders():
    assert is_toc_line("1 Why Prenatal Care Matters ............................................... 3")
    assert is_toc_line("2.1 First Trimester Screening . . . . . . . . . . 12")
    assert is_toc_line("Contents") and is_toc_line("Table of Contents") and is_toc_line("## Contents")
    assert not is_toc_line("The test is done between 11 and 14 weeks.")
    assert not is_toc_line("Wait... and then 3")


def test_toc_and_index_lines_from_real_manuals():
    for text in ["intersections . . . . . . 34, 144",                            # LaTeX index, spaced leaders
                 "3.3.2 Border(), buildmesh(), polygon() . . . . . . . . . . . . 10",  # freefem.pdf contents
                 "LU (void) . . . . . . . . . . . . . . . . . . . . . . . . . . 36",   # liboctave.pdf index
                 "asn1_der_coding ..........................17",
                 "9.3.41.31 set line cap .............. ix",
                 "intersections, 34, 144", "polygon(), 10", "buildmesh, 10–12", "Index", "List of Figures"]:
        assert is_toc_line(text), text
    for text in ["Boundaries must be closed but they may be entered by parts, each part with one instruction",
                 "t = tmin + i ∗ (tmax - tmin)/(nbt - 1) where i takes integer values from 0 to",
                 "Point(1) = {0.5,0.5,0.5,lcar2}; Point(2) = {0.5,0.5,0,lcar1};", "See Section 4.2.1, page 21."]:
        assert not is_toc_line(text), text


def test_ligatures_and_soft_hyphens():
    assert fix_characters("ﬁnite element \ufb02ow, e\u00adlement") == "finite element flow, element"


def test_photo_credits():
    for line in ["Photo credit: Clinic Archive / Healthy Pregnancy Series", "Photo: Nutrition Unit",
                 "Image courtesy of the WHO", "© 2024 Maternity Trust", "Photograph: J. Smith", "Credit: NIH"]:
        assert is_photo_credit(line), line
    for line in ["Photographs of the baby can be taken at the scan.", "Credit card payments are accepted at the clinic."]:
        assert not is_photo_credit(line), line


def test_running_headers_footers_and_page_numbers_by_position():
    # liboctave.pdf: "Chapter 3: Arrays" and the page number on one top line; a code line repeated mid-page is content
    lines = []
    for page in range(1, 6):
        body = [line(f"Body text {row} of page {page}.", page, 112.8 + 13.1 * row) for row in range(40)]
        lines += [line("Chapter 3: Arrays", page, 50.6), line(str(14 + page), page, 50.6),
                  line("int dim1 (void) const", page, 99.7), *body, line("int dim1 (void) const", page, 636.8),
                  line("Default value: 0", page, 649.9), line("GNU Octave", page, 705)]
    kept, removed = drop_page_furniture(lines)
    texts = [k.text for k in kept]
    assert "Chapter 3: Arrays" not in texts and "GNU Octave" not in texts and "15" not in texts
    # a line that ends every page with the usual spacing above it is content, not a footer
    assert texts.count("int dim1 (void) const") == 10 and texts.count("Default value: 0") == 5
    assert (removed.running, removed.page_numbers) == (10, 5)


def test_a_heading_is_never_furniture_and_a_short_document_needs_fewer_repeats():
    def page(number: int, header_is_heading: bool) -> list[Line]:
        return [line("Octave Quick Reference", number, 20, heading=int(header_is_heading)),
                *(line(f"Command {number}.{row}", number, 60 + 13 * row) for row in range(10))]

    kept, removed = drop_page_furniture(page(1, True) + page(2, False))
    assert [k.text for k in kept] == ["Octave Quick Reference", *(f"Command 1.{r}" for r in range(10)),
                                      *(f"Command 2.{r}" for r in range(10))]
    assert removed.running == 1


def test_contents_and_index_pages_are_dropped_whole():
    toc = [line("Contents", 3, 60), line("1 Introduction", 3, 100), line("4", 3, 100),
           line("1.1 Conventions . . . . . . . . . . . 4", 3, 120), line("1.2 Software and Documentation . . . 5", 3, 140),
           line("2 Installation", 3, 160), line("6", 3, 160)]
    body = [line("FreeFEM is an implementation of the Gfem language.", 4, 100), line("It solves PDEs.", 4, 120),
            line("See the list of reserved words.", 4, 140), line("More text.", 4, 160)]
    kept, removed = drop_page_furniture(toc + body)
    assert [k.page for k in kept] == [4, 4, 4, 4] and removed.toc_index_pages == 1


def test_wrapped_lines_and_hyphenation_are_joined():
    blocks = ["Prenatal care is the routine health care a person receives during", "pregnancy. Regular visits let a",
              "mid-", "wife follow the growth of the baby.", "A new paragraph starts here.", "## 1.1 The First Visit",
              "- a list item", "- another item"]
    assert join_wrapped_lines(blocks) == [
        "Prenatal care is the routine health care a person receives during pregnancy. Regular visits let a midwife "
        "follow the growth of the baby.",
        "A new paragraph starts here.", "## 1.1 The First Visit", "- a list item", "- another item"]


def test_empty_sections_are_dropped_but_parents_kept():
    blocks = ["# 1 Chapter", "## 1.1 Section", "Body.", "## 1.2 Empty", "# 2 Empty chapter", "# 3 Last", "Text."]
    assert drop_empty_sections(blocks) == ["# 1 Chapter", "## 1.1 Section", "Body.", "# 3 Last", "Text."]


def test_whole_page_of_native_output():
    raw = "\n\n".join([
        "2",
        "# 1 Why Prenatal Care Matters",
        "Prenatal care is the routine health care a person receives during pregnancy. Regular visits let a midwife or",
        "doctor follow the growth of the baby &amp; check the health of the pregnant person.",
        "<!-- image -->", "Photo credit: Clinic Archive / Healthy Pregnancy Series",
        "3",
        "## 1.1 The First Visit", "The ﬁrst visit is the longest.",
    ])
    assert clean_markdown(raw) == (
        "# 1 Why Prenatal Care Matters\n\n"
        "Prenatal care is the routine health care a person receives during pregnancy. Regular visits let a midwife or "
        "doctor follow the growth of the baby & check the health of the pregnant person.\n\n"
        "## 1.1 The First Visit\n\nThe first visit is the longest.\n")


def test_a_list_is_judged_item_by_item_and_a_long_line_with_dots_is_prose():
    toc = "- 1 Introduction ........ 3\n- 2 Installing ........ 7\n- 3 Using it ........ 12"
    prose = ("- **Google search**\n- To use Google's search in place of the built-in one, write a template with "
             "`var cx = '......'` and the rest of the snippet Google gives you; it replaces the search box.")
    cleaned = clean_markdown(f"# Guide\n\n{toc}\n\n## Search\n\n{prose}\n")
    assert "Introduction" not in cleaned
    assert "## Search\n\n- **Google search**\n- To use Google's search" in cleaned


@pytest.mark.parametrize(("line", "figure"), [
    ("0 20 40 60 80 100", True),          # an axis's ticks, drawn in a chart
    ("0.0 0.5 1.0 1.5 2.0", True),
    ("1 10 100 1000 10000", True),        # a log scale
    ("−40 −20 0 20 40", True),
    ("G G G G", True),                    # a logo's letters
    ("1 3 2 99 2 1 2 3 4", False),        # a file format's example line (gmsh): not evenly spaced
    ("1 2", False),
    ("The dose is 20 40 or 60 mg.", False),
    ("In 2020 2021 and 2022 the rate fell.", False),
])
def test_figure_text_is_told_from_numbers_in_prose(line, figure):
    assert is_figure_text(line) is figure


def test_figure_text_never_joins_the_paragraph_around_it():
    cleaned = clean_markdown("Blood pressure rises slowly in the third\n\n0 10 20 30 40\n\ntrimester for most women.\n")
    assert cleaned == "Blood pressure rises slowly in the third trimester for most women.\n"
