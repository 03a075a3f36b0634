"""A person's verdicts on the dataset: pairs and documents left out, answers corrected.

Kept apart from what stage 3 generates (``data/qa_dataset/review.json``, ids only, plus the
corrected text), so a verdict survives every rerun: stage 3 applies it after deduplication
and the split (the other pairs keep their sides), and stage 4 applies it to the files it
reads, so a review made after stage 3 counts without regenerating anything. The original
of a corrected answer is kept beside the correction.
"""

from __future__ import annotations

import getpass
from pathlib import Path

from pydantic import BaseModel, Field

from core.files import atomic_write_json
from tasks.common.records import utc_now


class Verdict(BaseModel):
    who: str = Field(default_factory=getpass.getuser)
    when: str = Field(default_factory=utc_now)
    why: str = ""


class Correction(Verdict):
    answer: str
    original: str


class Review(BaseModel):
    excluded_pairs: dict[str, Verdict] = {}
    excluded_documents: dict[str, Verdict] = {}
    corrections: dict[str, Correction] = {}

    def excludes(self, pair_id: str, doc_sha256: str) -> bool:
        return pair_id in self.excluded_pairs or doc_sha256 in self.excluded_documents

    def answer(self, pair_id: str, answer: str) -> str:
        """The answer to train and score on: the reviewer's correction, else the generated one."""
        correction = self.corrections.get(pair_id)
        return correction.answer if correction else answer


def load_review(path: Path) -> Review:
    return Review.model_validate_json(path.read_bytes()) if path.exists() else Review()


def save_review(path: Path, review: Review) -> None:
    atomic_write_json(path, review.model_dump(mode="json"))


def apply_review(records: list[dict], review: Review) -> tuple[list[dict], list[dict]]:
    """(the records kept, answers as the review has them now; the records it leaves out), each in its order. A record
    stage 3 wrote with a correction that was undone since gets its generated answer back."""
    kept, excluded = [], []
    for record in records:
        generated = record.get("original_answer") or record["answer"]
        if review.excludes(record["id"], record["doc_sha256"]):
            excluded.append(record)
        elif record["id"] in review.corrections or generated != record["answer"]:
            answer = review.answer(record["id"], generated)
            kept.append({**record, "answer": answer, "original_answer": generated if answer != generated else None})
        else:
            kept.append(record)
    return kept, excluded
