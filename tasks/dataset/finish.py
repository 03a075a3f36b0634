"""The dataset's finishing step: split the pairs by document, apply the review, check held-out pairs for
contamination, write the files stage 4 reads; and, after a later review, the training file again."""

from __future__ import annotations

from pathlib import Path

from core import artifacts
from core.config import PipelineConfig
from core.files import atomic_write_json, atomic_write_text
from tasks.common.records import Chunk
from tasks.common.review import Review, apply_review, load_review
from tasks.dataset import contamination
from tasks.dataset.chat import chat_jsonl
from tasks.dataset.pairs import QARecord
from tasks.dataset.split import SIDES, SplitLevel, split_level, split_records, trains_on


def split_and_write(config: PipelineConfig, records: list[QARecord],
                    chunks: list[Chunk]) -> tuple[dict[str, list[QARecord]], SplitLevel, dict, dict]:
    """Split by document (each document keeps the side it had), leave out what the review excludes (the others keep
    their sides), check the held-out pairs for contamination, write the dataset; the split, its level, and the
    review's and the contamination check's counts for stats.json."""
    g = config.dataset_generator
    ratios = g.split.model_dump()
    previous = artifacts.load_if_present(config, "split", {})
    split, sides = split_records(records, ratios, g.seed, previous)
    review = load_review(artifacts.review_file(config))
    excluded: list[dict] = []
    for side in SIDES:
        kept, left_out = apply_review([r.model_dump(mode="json") for r in split[side]], review)
        split[side] = [QARecord.model_validate(r) for r in kept]
        excluded += [{**r, "side": side, "reason": "review"} for r in left_out]
    overlaps = contamination.check(
        {side: [(r.id, r.question, r.answer) for r in split[side]] for side in SIDES[1:]},
        [(r.question, r.answer) for r in split["train"]],
        [c.text for c in chunks if trains_on(c, sides, ratios, g.seed)])
    if g.decontaminate:
        flagged = {o.id for o in overlaps if o.contaminated}
        for side in SIDES[1:]:
            excluded += [{**r.model_dump(mode="json"), "side": side, "reason": "contamination"}
                         for r in split[side] if r.id in flagged]
            split[side] = [r for r in split[side] if r.id not in flagged]
    _write_dataset(config, split)
    atomic_write_json(artifacts.path(config, "excluded"), excluded)
    atomic_write_json(artifacts.path(config, "split"), {**previous, **sides})
    by_review = [r for r in excluded if r["reason"] == "review"]
    counts = {"excluded_pairs": len(by_review), "excluded_documents": len(review.excluded_documents),
              "corrected": sum(r.original_answer is not None for side in SIDES for r in split[side])}
    return split, split_level(sides), counts, contamination.summary(overlaps, g.decontaminate)


def _write_dataset(config: PipelineConfig, split: dict[str, list[QARecord]]) -> None:
    """train/validation/test.json, and train_chat.jsonl (what 4b trains on); a two-way split's files are removed."""
    for side, records in split.items():
        atomic_write_json(artifacts.path(config, side), [r.model_dump(mode="json") for r in records])
    atomic_write_text(artifacts.path(config, "train_chat"), chat_jsonl(split["train"], config.domain))
    for stale in artifacts.two_way_split(config):
        stale.unlink(missing_ok=True)


def reviewed_train_chat(config: PipelineConfig) -> tuple[Path, str | None]:
    """train_chat.jsonl, rewritten when the review left out or corrected training pairs since stage 3 wrote it; and
    what changed, when it did."""
    path = artifacts.require(config, "train_chat", "4b")
    review = load_review(artifacts.review_file(config))
    if review == Review():
        return path, None
    kept, left_out = apply_review(artifacts.load(config, "train", "4b"), review)
    text = chat_jsonl((QARecord.model_validate(r) for r in kept), config.domain)
    if text == path.read_text(encoding="utf-8"):
        return path, None
    atomic_write_text(path, text)
    return path, (f"the review changed the training pairs since stage 3 ({len(left_out)} left out, "
                  f"{sum(r['id'] in review.corrections for r in kept)} corrected): {path.name} rewritten")
