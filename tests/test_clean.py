"""Each cleaning rule on snippets as docling emits them from real PDFs."""

from __future__ import annotations

from tasks.clean import (
    clean_markdown,
    drop_empty_sections,
    is_page_number,
    is_photo_credit,
    is_toc_line,
    join_wrapped_lines,
    remove_image_tags,
    repeated_blocks,
)


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


def test_photo_credits():
    for line in ["Photo credit: Clinic Archive / Healthy Pregnancy Series", "Photo: Nutrition Unit",
                 "Image courtesy of the WHO", "© 2024 Maternity Trust", "Photograph: J. Smith", "Credit: NIH"]:
        assert is_photo_credit(line), line
    for line in ["Photographs of the baby can be taken at the scan.", "Credit card payments are accepted at the clinic."]:
        assert not is_photo_credit(line), line


def test_running_headers_and_footers():
    blocks = ["Healthy Pregnancy Series", "Text one.", "Healthy Pregnancy Series", "Text two.",
              "Healthy Pregnancy Series", "# 1 Title", "# 1 Title", "# 1 Title"]
    assert repeated_blocks(blocks) == {"Healthy Pregnancy Series"}


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
        "Healthy Pregnancy Series", "2", "Healthy Pregnancy Series",
        "# 1 Why Prenatal Care Matters",
        "Prenatal care is the routine health care a person receives during pregnancy. Regular visits let a midwife or",
        "doctor follow the growth of the baby &amp; check the health of the pregnant person.",
        "<!-- image -->", "Photo credit: Clinic Archive / Healthy Pregnancy Series",
        "Healthy Pregnancy Series", "3",
        "## 1.1 The First Visit", "The first visit is the longest.", "Healthy Pregnancy Series",
    ])
    assert clean_markdown(raw) == (
        "# 1 Why Prenatal Care Matters\n\n"
        "Prenatal care is the routine health care a person receives during pregnancy. Regular visits let a midwife or "
        "doctor follow the growth of the baby & check the health of the pregnant person.\n\n"
        "## 1.1 The First Visit\n\nThe first visit is the longest.\n")
