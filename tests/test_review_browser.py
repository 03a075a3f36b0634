"""The review page in a real browser (Debian's Chromium, driven through chromedriver by Selenium): filter, exclude a
pair with the keyboard, undo, correct an answer, reload and see the verdicts kept; then rerun stages 3 and 4a and see
them in the files. The app runs in-process on a copy of the offline profile's stage-3 project; 4a asks the tiny model
(harness/tiny_model.py): which questions it asks, and against which references, is the subject."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from core.config import load_config
from harness import tiny_model as tiny
from harness.app_server import served_app
from harness.browser import chromium
from harness.project import copy_project, qa_dataset, run_pipeline
from tasks.dataset.review_app import create_app

pytestmark = pytest.mark.e2e
CORRECTED = "A corrected answer, typed in the browser."


@pytest.fixture
def served(stage3_project: Path, tiny_model: Path, tmp_path: Path):
    """(the project, the page's address): the review app on a copy of the stage-3 project, on loopback."""
    root = copy_project(stage3_project, tmp_path / "project", tiny.settings(tiny_model))
    with served_app(create_app(load_config(root / "config.yaml"))) as url:
        yield root, url + "/"


@pytest.fixture
def browser(tmp_path: Path):
    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver is needed: apt-get install chromium-driver (scripts/test.sh does it as root)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                     f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _current(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#list li.current").get_attribute("data-id")


def _state_is(driver, text: str) -> None:
    WebDriverWait(driver, 20).until(expected_conditions.text_to_be_present_in_element((By.ID, "state"), text))


def _press(driver, *keys: str) -> None:
    for key in keys:
        driver.find_element(By.TAG_NAME, "body").send_keys(key)


def test_an_exclusion_made_with_the_keyboard_survives_a_reload_and_a_rerun_of_stages_3_and_4a(served, browser):
    root, url = served
    before = qa_dataset(root / "data/qa_dataset")
    stats = json.loads((root / "data/qa_dataset/stats.json").read_text())

    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#list li"))
    assert f"stats.json: {stats['split']['train_pairs']} train" in browser.find_element(By.ID, "counts").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#list li")) == stats["pairs"]  # every pair, as stats.json counts
    Select(browser.find_element(By.ID, "side")).select_by_visible_text("test")
    shown = browser.find_elements(By.CSS_SELECTOR, "#list li")
    assert len(shown) == len(before["test"]) == stats["split"]["test_pairs"]
    assert browser.find_element(By.ID, "shown").text == f"{len(before['test'])} of {stats['pairs']} pairs shown"
    browser.find_element(By.ID, "side").send_keys(Keys.ESCAPE)  # back from the filter to the page's keys
    assert browser.find_elements(By.CSS_SELECTOR, ".passage mark")  # the source passage, answer words highlighted

    _press(browser, "j")
    excluded = _current(browser)
    assert excluded == before["test"][1]["id"]
    _press(browser, "x")
    _state_is(browser, "excluded by review")
    _press(browser, "j", "x")
    _state_is(browser, "excluded by review")
    undone = _current(browser)
    _press(browser, "u")
    _state_is(browser, "in the dataset")
    _press(browser, "j", "e")
    corrected = _current(browser)
    box = WebDriverWait(browser, 10).until(expected_conditions.presence_of_element_located((By.ID, "edit")))
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(CORRECTED)
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    WebDriverWait(browser, 20).until(expected_conditions.text_to_be_present_in_element((By.ID, "answer"), CORRECTED))

    browser.refresh()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#list li"))
    assert Select(browser.find_element(By.ID, "side")).first_selected_option.text == "test"  # kept in the address
    rows = {li.get_attribute("data-id"): li.get_attribute("class") for li in browser.find_elements(By.CSS_SELECTOR, "#list li")}
    assert "excluded" in rows[excluded] and "excluded" not in rows[undone] and "excluded" not in rows[corrected]
    assert _current(browser) == corrected and browser.find_element(By.ID, "answer").text == CORRECTED
    shot = root / "review.png"
    browser.save_screenshot(str(shot))
    print(json.dumps({"screenshot": str(shot)}))

    review = json.loads((root / "data/qa_dataset/review.json").read_text())
    assert set(review["excluded_pairs"]) == {excluded} and set(review["corrections"]) == {corrected}
    result = run_pipeline(root / "config.yaml", "--stage", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 left out by review" in result.stdout
    after = qa_dataset(root / "data/qa_dataset")
    for side in before:  # the other pairs keep their sides
        assert [r["id"] for r in after[side]] == [r["id"] for r in before[side] if r["id"] != excluded]
    fixed = next(r for r in after["test"] if r["id"] == corrected)
    original = next(r for r in before["test"] if r["id"] == corrected)
    assert fixed["answer"] == CORRECTED and fixed["original_answer"] == original["answer"]
    left_out = json.loads((root / "data/qa_dataset/excluded.json").read_text())
    assert [(r["id"], r["side"], r["reason"]) for r in left_out] == [(excluded, "test", "review")]
    stats = json.loads((root / "data/qa_dataset/stats.json").read_text())
    assert stats["review"] == {"excluded_pairs": 1, "excluded_documents": 0, "corrected": 1}
    assert stats["split"]["test_pairs"] == len(before["test"]) - 1

    result = run_pipeline(root / "config.yaml", "--stage", "4a", env={**os.environ, "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads((root / "reports/eval_baseline.json").read_text())["predictions"]
    assert [p["id"] for p in predictions] == [r["id"] for r in after["test"]]
    assert next(p for p in predictions if p["id"] == corrected)["reference"] == CORRECTED
