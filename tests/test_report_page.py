"""reports/index.html as a reader sees it: opened from disk by a real browser (headless Chromium), offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pypdfium2
import pytest
from PIL import Image, ImageStat

from core.results import EvaluationReport
from harness.browser import chromium
from tasks.dataset.stats import dataset_caveats
from tasks.finetune.comparison import comparison_markdown, summarise
from tasks.report.page import write_report

WEIGHTS = {"bertscore_f1": 0.4, "rouge_l": 0.3, "token_f1": 0.2, "rouge_1": 0.1}
QUESTIONS = ["What is colostrum?", "What is <b>pre-eclampsia</b> & why does it matter?", "What is lochia?",
             "What does the anatomy scan check?", "How do you relieve a leg cramp?", "What is mastitis?"]


def _report(shift: list[float], answers: str) -> EvaluationReport:
    scores = {"rouge_1": 0.3, "rouge_2": 0.1, "rouge_l": 0.3, "bertscore_f1": 0.5, "token_f1": 0.25, "combined": 0.35}
    predictions = [{"id": f"q{i}", "question": q, "reference": f"Reference answer {i}.",
                    "prediction": f"{answers} answer {i}.", "scores": {name: value + d for name, value in scores.items()}}
                   for i, (q, d) in enumerate(zip(QUESTIONS, shift, strict=True))]
    return EvaluationReport.model_validate({
        "model": answers, "adapter": None, "examples": len(shift), "weights": WEIGHTS, "split": "test", "metrics": scores,
        "settings": {"max_new_tokens": 64, "batch_size": 8, "bertscore_model": "bertscore", "system_prompt": ""},
        "predictions": predictions})


def browse(page: Path, out: Path, *what: str) -> None:
    """Open ``page`` in headless Chromium with the network off; ``what``: --screenshot=… / --print-to-pdf=…"""
    profile = out / "chromium-profile"
    result = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--user-data-dir={profile}", "--window-size=1280,2400", "--proxy-server=127.0.0.1:9",
                             "--no-pdf-header-footer", *what, page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report")
    summary = summarise(_report([0.0] * 6, "Base"), _report([0.2, 0.15, 0.1, 0.12, -0.05, 0.08], "Tuned"),
                        documents=2, resamples=2000, seed=1, confidence=0.95)
    selection = {"selected": "checkpoint-20", "split": "validation", "eval_examples": 5, "baseline_score": 0.3,
                 "scores": {"checkpoint-10": 0.36, "checkpoint-20": 0.41, "checkpoint-30": 0.39},
                 "margin": {"runner_up": "checkpoint-30", "before": 0.39, "after": 0.41, "delta": 0.02, "low": -0.01,
                            "high": 0.05, "p_value": 0.3, "confidence": 0.95, "resamples": 2000, "examples": 5,
                            "wins": 3, "ties": 1, "losses": 1}}
    train_log = {"loss_history": [{"step": 5 * i, "loss": 2.4 - 0.2 * i} for i in range(1, 7)]}
    write_report(out / "index.html", summary, selection, train_log, "pregnancy qa: fine-tuned vs base")
    return out / "index.html", summary


def test_the_page_needs_nothing_from_the_network(page):
    html = page[0].read_text()
    assert not re.findall(r"""(?:src|href)\s*=\s*["'](?!data:)""", html) and "@import" not in html
    assert html.count('src="data:image/png;base64,') == 3  # metric changes, checkpoint curve, training loss
    assert "<b>pre-eclampsia</b>" not in html and "&lt;b&gt;pre-eclampsia&lt;/b&gt; &amp; why" in html  # escaped


def test_chromium_renders_the_headline_table_and_answers(page, tmp_path):
    path, summary = page
    browse(path, tmp_path, f"--print-to-pdf={tmp_path / 'page.pdf'}")
    document = pypdfium2.PdfDocument(tmp_path / "page.pdf")
    text = " ".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    words = " ".join(text.replace("\ufffe", "-").split())  # lines wrap where they like (pdfium: U+FFFE at a hyphen)
    assert words.startswith("pregnancy qa: fine-tuned vs base")
    assert " ".join(summary["headline"].split()) in words
    combined = summary["metrics"]["combined"]
    assert (f"combined {combined['before']:.4f} {combined['after']:.4f} {combined['delta']:+.4f} "
            f"{combined['low']:+.4f} … {combined['high']:+.4f}") in words
    for metric in ("rouge_1", "rouge_2", "rouge_l", "bertscore_f1", "token_f1"):
        assert re.search(rf"{metric} \d\.\d{{4}} \d\.\d{{4}} [+-]\d\.\d{{4}}", words), metric
    assert "checkpoint-20 chosen on 5 validation questions" in words
    assert "Largest gains" in words and "Largest losses" in words
    assert "What is <b>pre-eclampsia</b> & why does it matter?" in words  # shown as text, not as markup
    assert "How do you relieve a leg cramp? Reference answer 4. Base answer 4. Tuned answer 4." in words


def test_chromium_screenshot_shows_a_drawn_page(page, tmp_path):
    shot = tmp_path / "index.png"
    browse(page[0], tmp_path, f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2400)
    assert max(ImageStat.Stat(image).stddev) > 20  # text, tables and plots, not a blank page
    shutil.copy(shot, Path(page[0]).with_name("index.png"))  # kept beside the page for a person to look at
    print(json.dumps({"screenshot": str(shot)}))


def test_the_report_says_what_the_contamination_check_and_the_review_found(tmp_path):
    stats = {"split": {"level": "document", "ratios": {"train": 0.6, "validation": 0.2, "test": 0.2},
                       "shares": {"train": 0.45, "validation": 0.2, "test": 0.35}},
             "review": {"excluded_pairs": 3, "excluded_documents": 1, "corrected": 2},
             "contamination": {"ngram": 13, "checked": 40, "dropped": False, "flagged": {"test": 2, "validation": 0},
                               "longest": 21, "pairs": []}}
    caveats = dataset_caveats(stats)
    assert caveats == [
        "Contamination check (stage 3): 2 of 40 validation/test pairs (2 test) share a run of 13+ words with training "
        "(longest 21): kept, flagged in stats.json (dataset_generator.decontaminate: true drops them).",
        "Review: 3 pairs left out (with 1 whole document), 2 answers corrected (data/qa_dataset/review.json).",
        "Split: train has 45% of the pairs for a ratio of 60%; test has 35% of the pairs for a ratio of 20% "
        "(whole documents could not come closer)."]
    summary = summarise(_report([0.0] * 6, "Base"), _report([0.2, 0.15, 0.1, 0.12, -0.05, 0.08], "Tuned"),
                        documents=2, resamples=200, seed=1, confidence=0.95) | {"caveats": caveats}
    write_report(tmp_path / "index.html", summary, None, None, "t")
    html = (tmp_path / "index.html").read_text()
    assert '<h2>About the data</h2>' in html and "share a run of 13+ words with training (longest 21)" in html
    assert "About the data:\n- Contamination check (stage 3): 2 of 40" in comparison_markdown(summary, None)
    assert dataset_caveats({}) == []  # stats.json of an earlier version: nothing to say
