"""Real docling conversion of real PDFs: headings recovered, bad files recorded, set-up errors explained."""

from __future__ import annotations

from pathlib import Path

import pytest
from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions
from fpdf import FPDF

from tasks.convert import ConverterSettings, ConverterUnavailable, convert_document, format_options
from tasks.headings import escape_hash_lines, recover_headings

NATIVE = ConverterSettings(kind="native")


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
    text = "2 Results were good, 3 were not.\n\nText."
    assert recover_headings(text, Path("/nonexistent.pdf")) == (text, 0, None)  # a sentence is not a heading


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
    standard = format_options(ConverterSettings(kind="standard", artifacts_path=models, do_table_structure=True)).pipeline_options
    assert isinstance(standard, PdfPipelineOptions)
    assert Path(standard.artifacts_path) == models and standard.do_table_structure and not standard.do_ocr


def test_standard_pipeline_with_missing_artifacts_folder_says_how_to_fix(sample_pdf_dir, tmp_path):
    settings = ConverterSettings(kind="standard", artifacts_path=tmp_path / "absent")
    with pytest.raises(ConverterUnavailable, match="docling-tools models download"):
        convert_document.fn(sample_pdf_dir / "01-prenatal-care.pdf", tmp_path / "o.md", settings)


def test_standard_pipeline_offline_without_models_fails_the_stage_clearly(sample_pdf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConverterUnavailable, match="artifacts_path"):
        convert_document.fn(sample_pdf_dir / "01-prenatal-care.pdf", tmp_path / "o.md", ConverterSettings(kind="standard"))
