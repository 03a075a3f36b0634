"""Answer quality metrics: ROUGE-1/2/L, BERTScore F1, token F1, and the combined score.

The maintained packages do the work: ``rouge_score`` (the library behind the hub's
``evaluate`` "rouge" metric, which itself needs the hub at run time) and ``bert_score``
with a configurable model (roberta-large in the reference config; a small sentence model
shipped in a PyPI package offline). Token F1 is SQuAD's: lowercase, strip punctuation and
articles, bag-of-tokens overlap. No BLEU: it rewards surface n-grams over meaning for
short answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

METRICS = ("rouge_1", "rouge_2", "rouge_l", "bertscore_f1", "token_f1")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer  # nltk underneath: a second to import, needed only when scoring

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    scores = _rouge().score(reference, prediction)
    return {"rouge_1": scores["rouge1"].fmeasure, "rouge_2": scores["rouge2"].fmeasure, "rouge_l": scores["rougeL"].fmeasure}


@lru_cache(maxsize=2)
def _bert_scorer(model: str, num_layers: int | None):
    from bert_score import BERTScorer

    return BERTScorer(model_type=model, num_layers=num_layers, lang="en" if num_layers is None else None)


def bertscore_f1(predictions: list[str], references: list[str], model: str, num_layers: int | None) -> list[float]:
    """An empty answer (a model that stops at once) scores as token F1 does: 1 against an empty reference, else 0.
    bert_score cannot encode one with transformers 5 (its empty-string path calls a tokenizer method 5 removed)."""
    scores = [float(not p.strip() and not r.strip()) for p, r in zip(predictions, references, strict=True)]
    scored = [i for i, (p, r) in enumerate(zip(predictions, references, strict=True)) if p.strip() and r.strip()]
    if scored:
        _, _, f1 = _bert_scorer(model, num_layers).score([predictions[i] for i in scored], [references[i] for i in scored],
                                                         batch_size=32)
        for i, x in zip(scored, f1, strict=True):
            scores[i] = float(x)
    return scores


def combined(scores: dict[str, float], weights: dict[str, float]) -> float:
    return sum(weight * scores[name] for name, weight in weights.items())


def score_all(predictions: list[str], references: list[str], bertscore_model: str, bertscore_layers: int | None,
              weights: dict[str, float]) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per-example scores and their means (every metric and ``combined``)."""
    bert = bertscore_f1(predictions, references, bertscore_model, bertscore_layers)
    per_example = []
    for prediction, reference, bert_f1 in zip(predictions, references, bert, strict=True):
        scores = {**rouge(prediction, reference), "bertscore_f1": bert_f1, "token_f1": token_f1(prediction, reference)}
        scores["combined"] = combined(scores, weights)
        per_example.append(scores)
    names = [*METRICS, "combined"]
    aggregate = {name: sum(s[name] for s in per_example) / len(per_example) if per_example else 0.0 for name in names}
    return per_example, aggregate
