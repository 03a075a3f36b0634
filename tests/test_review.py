"""The dataset review: verdicts in review.json and how stages apply them, the contamination check, the review page's
flags, and the review app's API (in-process, on a small hand-written dataset; the browser test is
tests/test_review_browser.py)."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import load_config
from harness.app_server import served_app
from harness.project import run_pipeline, write_profile
from tasks.common.questions import words
from tasks.common.review import Correction, Review, Verdict, apply_review, load_review, save_review
from tasks.dataset.contamination import NGRAM, LongestShared, check, contamination_line, summary
from tasks.dataset.flags import highlights, near_duplicates, pair_flags, vague_wording
from tasks.dataset.review_app import create_app, review_data
from tasks.finetune.evaluate import load_questions

DOC_A, DOC_B = "a" * 64, "b" * 64
PASSAGE = ("Iron is needed to make extra blood for the pregnant person and the baby. Iron deficiency anaemia causes "
           "tiredness and breathlessness. Good sources are red meat, pulses and dark green vegetables.")


def _pair(pair_id: str, question: str, answer: str, doc: str = DOC_A, chunk: str = "c1") -> dict:
    return {"id": pair_id, "question": question, "answer": answer, "type": "what", "chunk_ids": [chunk],
            "doc_sha256": doc, "url": None, "provider": "offline", "model": "m", "prompt_version": "1"}


# --- review.json and applying it ---------------------------------------------------------------------------------

def test_a_review_leaves_out_pairs_and_documents_and_corrects_answers_keeping_the_original(tmp_path):
    records = [_pair("p1", "What causes tiredness?", "Anaemia."), _pair("p2", "What is iron for?", "Blood."),
               _pair("p3", "What are pulses?", "Food.", doc=DOC_B), _pair("p4", "Why eat greens?", "Iron.")]
    review = Review(excluded_pairs={"p2": Verdict(why="vague")}, excluded_documents={DOC_B: Verdict()},
                    corrections={"p4": Correction(answer="They hold iron.", original="Iron.")})
    save_review(tmp_path / "review.json", review)
    loaded = load_review(tmp_path / "review.json")
    assert loaded == review and loaded.excluded_pairs["p2"].who and loaded.excluded_pairs["p2"].when  # who/when kept
    kept, left_out = apply_review(records, loaded)
    assert [r["id"] for r in kept] == ["p1", "p4"] and [r["id"] for r in left_out] == ["p2", "p3"]
    assert kept[1]["answer"] == "They hold iron." and kept[1]["original_answer"] == "Iron."
    assert load_review(tmp_path / "missing.json") == Review()


def test_stage_four_reads_its_questions_through_the_review(tmp_path):
    """A verdict made after stage 3 counts in 4a/4c/4d at once (and in 4b: tests/test_review_browser.py)."""
    path = tmp_path / "test.json"
    path.write_text(json.dumps([_pair(f"p{i}", f"Question {i}?", f"Answer {i}.") for i in range(5)]))
    review = Review(excluded_pairs={"p1": Verdict()}, corrections={"p3": Correction(answer="Fixed.", original="Answer 3.")})
    questions = load_questions(path, review=review)
    assert [q["id"] for q in questions] == ["p0", "p2", "p3", "p4"] and questions[2]["answer"] == "Fixed."
    with pytest.raises(ValueError, match="has no questions"):
        load_questions(path, review=Review(excluded_documents={DOC_A: Verdict()}))
    corrected_by_stage3 = {**_pair("p9", "Question 9?", "Fixed 9."), "original_answer": "Answer 9."}
    path.write_text(json.dumps([corrected_by_stage3]))
    assert load_questions(path, review=Review())[0]["answer"] == "Answer 9."  # the correction was undone since


# --- contamination -----------------------------------------------------------------------------------------------

def _brute_longest(text: str, sources: list[str]) -> int:
    t, best = words(text), 0
    for source in sources:
        s = words(source)
        for i in range(len(t)):
            for j in range(len(s)):
                k = 0
                while i + k < len(t) and j + k < len(s) and t[i + k] == s[j + k]:
                    k += 1
                best = max(best, k)
    return best


_TEXT = st.lists(st.sampled_from(["iron", "blood", "the", "baby", "a", "Iron,", "3"]), max_size=14).map(" ".join)


@given(sources=st.lists(_TEXT, max_size=4), text=_TEXT)
@settings(max_examples=300, deadline=None)
def test_the_longest_shared_run_is_exact_and_never_crosses_from_one_source_into_the_next(sources, text):
    assert LongestShared(sources)(text) == _brute_longest(text, sources)


def test_a_held_out_pair_copying_thirteen_training_words_is_flagged_and_twelve_is_not():
    chunk = " ".join(f"w{i}" for i in range(40))
    copied13 = " ".join(f"w{i}" for i in range(5, 18))
    copied12 = " ".join(f"w{i}" for i in range(20, 32))
    overlaps = check({"validation": [("v1", "What is it?", copied12)], "test": [("t1", "Where?", f"See {copied13}.")]},
                     [("What is iron?", "Iron makes blood for the baby.")], [chunk])
    by_id = {o.id: o for o in overlaps}
    assert by_id["t1"].with_chunks == NGRAM and by_id["t1"].contaminated
    assert by_id["v1"].with_chunks == 12 and not by_id["v1"].contaminated
    stats = summary(overlaps, dropped=False)
    assert stats["flagged"] == {"test": 1, "validation": 0} and stats["longest"] == 13
    assert stats["pairs"] == [{"id": "t1", "side": "test", "with_pairs": 0, "with_chunks": 13}]
    assert "1 of 2 validation/test pairs (1 test) share a run of 13+ words" in contamination_line(stats)
    assert "decontaminate: true drops them" in contamination_line(stats)


# --- flags -------------------------------------------------------------------------------------------------------

def test_flags_mark_near_duplicates_vague_wording_unsupported_answers_and_contamination():
    found = near_duplicates([("1", "What is the template document used for?"), ("2", "What does GetString do?"),
                             ("3", "Why is a template document used?"), ("4", "What does abs do?")])
    assert found == {"3": "1"}  # the same subject asked twice; not the same template with another subject
    assert vague_wording("What is described in this section?") and vague_wording("Why is it so?")
    assert not vague_wording("What is labour?") and not vague_wording("How do you keep the stump clean?")
    supported = pair_flags("What does iron deficiency cause?", "Iron deficiency anaemia causes tiredness.", PASSAGE,
                           None, None)
    assert supported == {}
    flags = pair_flags("What about the above?", "Folic acid prevents neural tube defects.", PASSAGE, "1",
                       {"with_pairs": 3, "with_chunks": 14})
    assert flags["near_duplicate"] == "1" and flags["vague"] and flags["not_in_source"] < 0.8
    assert flags["contamination"] == 14


@given(answer=st.text(max_size=80), passage=st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_highlights_are_ordered_spans_of_the_passage_holding_the_answers_words(answer, passage):
    spans = highlights(answer, passage)
    assert all(0 <= a < b <= len(passage) for a, b in spans) and spans == sorted(spans)
    assert all(b <= c for (_, b), (c, _) in itertools.pairwise(spans))
    answer_words = set(words(answer))
    assert all(passage[a:b].lower() in answer_words for a, b in spans)


# --- the app -----------------------------------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path: Path):
    """A stage-3 dataset by hand: two documents, three sides, one pair left out by the contamination check."""
    config = write_profile(tmp_path)
    qa, chunks_dir, raw = tmp_path / "data/qa_dataset", tmp_path / "data/chunks", tmp_path / "data/raw"
    for folder in (qa, chunks_dir, raw):
        folder.mkdir(parents=True)
    chunks = [{"id": "c1", "doc_sha256": DOC_A, "section_path": ["1 Food", "1.2 Iron"], "text": PASSAGE, "tokens": 40},
              {"id": "c2", "doc_sha256": DOC_B, "section_path": ["2 Labour"], "text": "Labour is how the baby is born.",
               "tokens": 8}]
    (chunks_dir / "chunks.json").write_text(json.dumps(chunks))
    (raw / "metadata.json").write_text(json.dumps([
        {"url": "file:///x/nutrition.pdf", "title": "Nutrition", "source": "local", "sha256": DOC_A, "status": "ok"},
        {"url": "file:///x/labour.pdf", "title": None, "source": "local", "sha256": DOC_B, "status": "ok"}]))
    sides = {"train": [_pair("t1", "What causes tiredness in pregnancy?", "Iron deficiency anaemia causes tiredness.")],
             "validation": [_pair("v1", "What are good sources of iron?", "Red meat, pulses and dark green vegetables.")],
             "test": [_pair("x1", "What is labour?", "Labour is how the baby is born.", doc=DOC_B, chunk="c2"),
                      _pair("x2", "What is described in this section?", "Folic acid.", doc=DOC_B, chunk="c2")]}
    for side, records in sides.items():
        (qa / f"{side}.json").write_text(json.dumps(records))
    (qa / "excluded.json").write_text(json.dumps([{**_pair("x3", "Why iron?", "Blood.", doc=DOC_B, chunk="c2"),
                                                    "side": "test", "reason": "contamination"}]))
    (qa / "stats.json").write_text(json.dumps({
        "split": {"train_pairs": 1, "validation_pairs": 1, "test_pairs": 2},
        "review": {"excluded_pairs": 0, "excluded_documents": 0, "corrected": 0},
        "contamination": {"ngram": 13, "checked": 3, "dropped": True, "flagged": {"test": 1, "validation": 0},
                          "longest": 15, "pairs": [{"id": "x3", "side": "test", "with_pairs": 15, "with_chunks": 2}]}}))
    return load_config(config)


def test_the_page_data_holds_every_pair_with_its_source_flags_and_counts_as_stats_json(project):
    data = review_data(project)
    pairs = {p["id"]: p for p in data["pairs"]}
    assert set(pairs) == {"t1", "v1", "x1", "x2", "x3"}
    assert data["stats"] | {"contamination": None} == {"train": 1, "validation": 1, "test": 2, "excluded_by_review": 0,
                                                       "contamination": None}
    t1 = pairs["t1"]
    assert t1["sections"] == ["1 Food › 1.2 Iron"] and data["chunks"]["c1"] == PASSAGE
    marked = [PASSAGE[a:b] for a, b in t1["highlights"]["c1"]]
    assert {"Iron", "deficiency", "anaemia", "causes", "tiredness"} <= set(marked)
    assert pairs["x2"]["flags"]["vague"] and pairs["x2"]["flags"]["not_in_source"] == 0.0
    assert pairs["x3"]["decontaminated"] and pairs["x3"]["flags"]["contamination"] == 15
    assert data["documents"][DOC_A]["title"] == "Nutrition" and data["documents"][DOC_B]["title"] == "labour.pdf"


def test_exclusions_corrections_and_undo_write_review_json(project):
    client = TestClient(create_app(project))
    path = project.path(project.paths.qa_dataset) / "review.json"
    assert client.get("/").status_code == 200 and "QA dataset review" in client.get("/").text
    assert client.put("/api/pairs/x2/exclusion", json={"why": "vague"}).json()["excluded_pairs"] == 1
    assert json.loads(path.read_text())["excluded_pairs"]["x2"]["why"] == "vague"
    assert client.put(f"/api/documents/{DOC_A}/exclusion", json={}).status_code == 200
    response = client.put("/api/pairs/x1/correction", json={"answer": "  Labour is giving birth. ", "why": "clearer"})
    assert response.status_code == 200
    data = client.get("/api/data").json()
    pairs = {p["id"]: p for p in data["pairs"]}
    assert pairs["x2"]["excluded"] and not pairs["t1"]["excluded"] and data["documents"][DOC_A]["excluded"]
    assert pairs["x1"]["answer"] == "Labour is giving birth." and pairs["x1"]["original_answer"] == \
        "Labour is how the baby is born."
    saved = json.loads(path.read_text())
    assert saved["corrections"]["x1"] == {**saved["corrections"]["x1"], "answer": "Labour is giving birth.",
                                          "original": "Labour is how the baby is born.", "why": "clearer"}
    for undo in ("/api/pairs/x2/exclusion", f"/api/documents/{DOC_A}/exclusion", "/api/pairs/x1/correction"):
        assert client.delete(undo).status_code == 200
    assert load_review(path) == Review()


def test_bad_requests_get_a_reason_and_change_nothing(project):
    client = TestClient(create_app(project))
    assert client.put("/api/pairs/nope/exclusion", json={}).status_code == 404
    assert "no pair 'nope'" in client.put("/api/pairs/nope/exclusion", json={}).json()["detail"]
    assert client.put(f"/api/documents/{'c' * 64}/exclusion", json={}).status_code == 404
    assert client.put("/api/pairs/x1/correction", json={"answer": ""}).status_code == 422
    assert client.put("/api/pairs/x1/exclusion", json={"why": "w" * 501}).status_code == 422
    assert not (project.path(project.paths.qa_dataset) / "review.json").exists()


def test_with_a_token_the_api_needs_it_and_the_page_itself_is_static(project):
    client = TestClient(create_app(project, token="s3cret"))
    assert client.get("/").status_code == 200
    assert client.get("/api/data").status_code == 401
    assert client.put("/api/pairs/x2/exclusion", json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/data", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_without_stage_three_the_review_says_what_to_run(tmp_path):
    result = run_pipeline(write_profile(tmp_path), "--review", timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("error: stage 3 (--review) needs ")
    assert "stats.json: run stage 3 first" in result.stderr


def test_4b_trains_on_the_reviewed_pairs_when_the_review_came_after_stage_three(project):
    from tasks.dataset.chat import chat_jsonl
    from tasks.dataset.finish import reviewed_train_chat
    from tasks.dataset.pairs import QARecord

    qa = project.path(project.paths.qa_dataset)
    train = [_pair("t1", "What causes tiredness?", "Anaemia."), _pair("t2", "What is iron for?", "Blood."),
             _pair("t3", "What are pulses?", "Food.", doc=DOC_B)]
    (qa / "train.json").write_text(json.dumps(train))
    chat = qa / "train_chat.jsonl"
    chat.write_text(chat_jsonl([QARecord.model_validate(r) for r in train], project.domain))
    untouched = chat.read_bytes()
    assert reviewed_train_chat(project) == (chat, None) and chat.read_bytes() == untouched  # no review: as it is
    save_review(qa / "review.json", Review(excluded_documents={DOC_B: Verdict()},
                                           corrections={"t2": Correction(answer="It makes blood.", original="Blood.")}))
    path, changed = reviewed_train_chat(project)
    assert changed == "the review changed the training pairs since stage 3 (1 left out, 1 corrected): train_chat.jsonl rewritten"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["t1", "t2"]
    assert lines[1]["messages"][-1] == {"role": "assistant", "content": "It makes blood."}


def test_schemathesis_finds_nothing(project, tmp_path):
    """Every check schemathesis has, on every operation of the review API (generated ids, bodies, verdicts; the
    stateful phase chains exclusions, corrections and undos): a 4xx with a reason, never a 500 or a reply off the schema."""
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert binary, "schemathesis is a dev dependency (pip install -e .[dev])"
    with served_app(create_app(project, token="t0ken")) as url:
        result = subprocess.run(
            [binary, "run", f"{url}/openapi.json", "--checks", "all", "-H", "Authorization: Bearer t0ken",
             "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "40", "--seed", "1", "--max-time", "40"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"}, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:]
    assert re.search(r"(\d+) generated, \1 passed", result.stdout), result.stdout[-2000:]
