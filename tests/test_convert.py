"""Real docling conversion of real PDFs: headings recovered, bad files recorded, set-up errors explained."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions
from fpdf import FPDF

from core.config import DataProcessor
from harness.project import REPO
from tasks.process.convert import ConverterUnavailable, convert_document, format_options
from tasks.process.headings import OutlineEntry, detect_by_typography, escape_hash_lines, place_outline, title_key
from tasks.process.layout import Line
from tasks.process.reasons import MAX_REASON, short_reason

NATIVE = DataProcessor(converter="native")


def test_sample_pdf_converts_with_outline_headings(sample_pdf_dir, tmp_path):
    out = tmp_path / "doc.md"
    record = convert_document.fn(sample_pdf_dir / "01-prenatal-care.pdf", out, NATIVE)
    assert record.status == "ok" and record.heading_source == "outline" and record.headings == 8
    assert record.pages == 4
    text = out.read_text()
    assert "# 1 Why Prenatal Care Matters" in text and "## 2.3 Glucose Screening" in text
    for noise in ["Healthy Pregnancy Series\n", "Photo credit", "......", "\n\n2\n\n"]:
        assert noise not in text
    assert "A urine test screens for protein, sugar and infection." in text  # wrapped line re-joined


def _pdf_without_outline(path: Path) -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for line in ["1 Overview", "Morning sickness is common in early pregnancy.", "1.1 Causes",
                 "Hormone changes are the likely cause.", "# not a heading: a code comment"]:
        pdf.multi_cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def test_numbered_headings_when_there_is_no_outline(tmp_path):
    source = tmp_path / "plain.pdf"
    _pdf_without_outline(source)
    record = convert_document.fn(source, tmp_path / "plain.md", NATIVE)
    assert record.status == "ok" and record.heading_source == "numbered" and record.headings == 2
    text = (tmp_path / "plain.md").read_text()
    assert "# 1 Overview" in text and "## 1.1 Causes" in text
    assert "\\# not a heading" in text


def test_heading_helpers():
    assert escape_hash_lines("# code\ntext #tag") == "\\# code\ntext #tag"
    # numbering, case, ligatures, hyphenation and spacing do not change a title's key (titles from gmsh.pdf, freefem.pdf)
    assert title_key("9.3.41.31 set line cap") == title_key("Set Line Cap") == "setlinecap"
    assert title_key("3.3.2 Border(), buildmesh(), polygon()") == title_key("Border(), buildmesh(), polygon()")
    assert title_key("Chapter 4: Function reference") == title_key("Function reference")
    assert title_key("Appendix A Tutorial") == title_key("Tutorial") and title_key("Chapter 1") == ""
    assert title_key("Tri-\nangulations and ﬁnite elements") == title_key("Triangulations and finite elements")


def ln(text: str, page: int, top: float, size: float = 0.0, bold: bool = False) -> Line:
    return Line(text=text, page=page, top=top, height=10, left=90, bottom_pdf=700 - top, size=size, bold=bold)


def test_outline_is_placed_at_its_destinations_and_matched_tolerantly():
    lines = [
        ln("1.1 Conventions . . . . . . . . . . . . . 4", 3, 100),            # the contents page names the title: not it
        ln("Some text before the section.", 5, 300),
        ln("1.1 Conventions", 5, 341.5),                                      # numbering the outline leaves out
        ln("A triangulation is a set of triangles.", 5, 355),
        ln("3.3.3 Geometric variables, inner and region", 12, 180),          # a title wrapped onto two lines
        ln("bdy, normal", 12, 193),
        ln("Text of 3.3.3.", 12, 206),
        ln("Programs: a program is a list of instructions.", 8, 310),        # a title run into its paragraph
        ln("Body of a section whose title is not printed.", 9, 400),
    ]
    outline = [OutlineEntry(2, "Conventions", 5, 338.0),
               OutlineEntry(3, "Geometric variables, inner and region bdy, normal", 12, 176.0),
               OutlineEntry(2, "Programs", 8, 305.0),
               OutlineEntry(2, "Results", 9, 395.0)]
    marked, matched = place_outline(lines, outline)
    assert matched == 3
    assert [(m.text, m.heading) for m in marked if m.heading] == [
        ("1.1 Conventions", 2), ("3.3.3 Geometric variables, inner and region bdy, normal", 3), ("Programs", 2),
        ("Results", 2)]
    texts = [m.text for m in marked]
    assert texts[0].startswith("1.1 Conventions . . .")   # the TOC line stays text (cleaning drops it)
    assert "a program is a list of instructions." in texts  # the run-in paragraph keeps its text
    assert texts.index("Results") == texts.index("Body of a section whose title is not printed.") - 1  # inserted


def test_typography_finds_headings_by_size_weight_and_numbering():
    body = [ln(f"Body line {i} of running text in the body font.", 1, 200 + 12 * i, size=10) for i in range(30)]
    lines = [ln("Octave Quick Reference", 1, 50, size=17), ln("Starting Octave", 1, 100, size=12, bold=True),
             *body[:15], ln("Stopping Octave", 1, 400, size=12, bold=True), ln("2.1 Exit codes", 1, 420, size=10, bold=True),
             *body[15:], ln("A sentence in bold that ends with a period.", 1, 700, size=10, bold=True)]
    marked, count, source = detect_by_typography(lines)
    assert source == "typography" and count == 4
    assert [(m.text, m.heading) for m in marked if m.heading] == [
        ("Octave Quick Reference", 1), ("Starting Octave", 2), ("Stopping Octave", 2), ("2.1 Exit codes", 2)]


@pytest.mark.parametrize("content", [b"", b"%PDF-1.4\ngarbage", b"<html>not a pdf</html>"])
def test_corrupt_pdfs_are_recorded_not_fatal(tmp_path, content):
    bad = tmp_path / ("f" * 64 + ".pdf")
    bad.write_bytes(content)
    record = convert_document.fn(bad, tmp_path / "out.md", NATIVE)
    assert record.status == "failed" and record.error
    assert not (tmp_path / "out.md").exists()


def test_truncated_pdf_is_recorded(sample_pdfs, tmp_path):
    data = next(iter(sample_pdfs.values()))
    bad = tmp_path / "trunc.pdf"
    bad.write_bytes(data[: len(data) // 2])
    assert convert_document.fn(bad, tmp_path / "out.md", NATIVE).status == "failed"


def test_standard_pipeline_configuration(tmp_path):
    native = format_options(NATIVE).pipeline_options
    assert isinstance(native, NativePdfPipelineOptions) and not native.generate_page_images
    models = tmp_path / "docling-models"
    models.mkdir()
    settings = DataProcessor(converter="standard", artifacts_path=models, do_table_structure=True)
    standard = format_options(settings).pipeline_options
    assert isinstance(standard, PdfPipelineOptions)
    assert Path(standard.artifacts_path) == models and standard.do_table_structure and not standard.do_ocr


def test_standard_pipeline_with_missing_artifacts_folder_says_how_to_fix(sample_pdf_dir, tmp_path):
    settings = DataProcessor(converter="standard", artifacts_path=tmp_path / "absent")
    with pytest.raises(ConverterUnavailable, match="docling-tools models download"):
        convert_document.fn(sample_pdf_dir / "01-prenatal-care.pdf", tmp_path / "o.md", settings)


def test_standard_pipeline_offline_without_models_fails_the_stage_clearly(sample_pdf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConverterUnavailable, match="artifacts_path"):
        convert_document.fn(sample_pdf_dir / "01-prenatal-care.pdf", tmp_path / "o.md", DataProcessor(converter="standard"))


def test_sample_pdfs_render_byte_for_byte_the_same_anywhere_any_time(sample_pdf_dir, tmp_path):
    """Their sha256 is the documents' identity (split, caches): a clone elsewhere, later, must get the same bytes."""
    time.sleep(1.1)  # a renderer stamping the clock would now write another creation date and file id
    again = tmp_path / "again"
    rendered = subprocess.run([sys.executable, "-m", "tasks.collect.sample_corpus", str(REPO / "sample_corpus"), str(again)],
                              cwd=REPO, env={**os.environ, "TZ": "Pacific/Kiritimati"}, capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    first = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sample_pdf_dir.glob("*.pdf")}
    second = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in again.glob("*.pdf")}
    assert first == second and len(first) == len(list((REPO / "sample_corpus").glob("*.md")))


def test_a_truncated_pdf_fails_with_one_short_reason_and_the_details_kept(sample_pdf_dir, tmp_path):
    data = (sample_pdf_dir / "02-nutrition.pdf").read_bytes()
    sha = hashlib.sha256(data[: len(data) // 2]).hexdigest()
    path = tmp_path / f"{sha}.pdf"
    path.write_bytes(data[: len(data) // 2])
    record = convert_document.fn(path, tmp_path / "out.md", NATIVE)
    assert (record.status, record.step) == ("failed", "conversion")
    assert record.error == "truncated or damaged PDF: it cannot be opened (data format error)"
    assert sha in record.detail  # docling's message, as it was, for the run log and the manifest


def test_a_reason_never_shows_content_addressed_paths_and_stays_on_one_short_line(tmp_path):
    sha = "ab" * 32
    error = RuntimeError(f"Conversion failed for: /data/raw/{sha}.html with status: failure.\nErrors: key=/data/raw/{sha}"
                         + " and more" * 40)
    reason = short_reason("html", "conversion", error, tmp_path / f"{sha}.html")
    assert reason.startswith("web page, conversion failed: RuntimeError: Conversion failed for: the document with status")
    assert sha not in reason and "\n" not in reason and len(reason) <= MAX_REASON and reason.endswith("…")


def test_a_charts_tick_labels_and_a_logos_letters_do_not_reach_the_text(tmp_path):
    source = tmp_path / "chart.pdf"
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 6, "1 Weight gain", new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(0, 6, "Most women gain between 11 and 16 kg during a pregnancy, much of it in the second half.",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.rect(20, 40, 160, 60)  # the chart's frame; its axis labels are text on one baseline
    for index, tick in enumerate(("0", "10", "20", "30", "40")):
        pdf.text(22 + index * 38, 106, tick)
    for index in range(4):
        pdf.text(150 + index * 6, 35, "W")  # a logo's letters
    pdf.set_xy(10, 115)
    pdf.multi_cell(0, 6, "Gaining less or more than this is discussed at the next visit with the midwife.",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(source))
    record = convert_document.fn(source, tmp_path / "chart.md", NATIVE)
    assert record.status == "ok", record
    text = (tmp_path / "chart.md").read_text()
    assert "Most women gain between 11 and 16 kg" in text and "next visit with the midwife" in text
    assert "0 10 20 30 40" not in " ".join(text.split()) and "W W W W" not in text, text
