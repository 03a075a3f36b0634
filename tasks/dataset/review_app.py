"""The review app: every QA pair beside the passage it came from, and a person's verdicts written to review.json.

It reads what stage 3 wrote (the three sides, the pairs it left out, stats.json, the chunks and
the documents' titles) on every request, so a rerun of stage 3 shows at once; it writes only
review.json (atomically, under one lock), which stages 3 and 4 apply. The page is one static
file with no outside resources; its data comes from /api, which needs the token when the app
has one (``pipeline.py --review`` gives it one whenever it listens beyond loopback).
"""

from __future__ import annotations

import hmac
import threading
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from core import artifacts
from core.asgi import FullAllowHeader
from core.config import PipelineConfig
from tasks.common.records import Chunk
from tasks.common.review import Correction, Review, Verdict, load_review, save_review
from tasks.dataset.flags import highlights, near_duplicates, pair_flags
from tasks.dataset.split import SIDES

PAGE = Path(__file__).with_name("review_page.html")
REVIEW = "3 (--review)"  # what needs stage 3's files, in MissingStageOutput's words


def _records(config: PipelineConfig) -> list[dict]:
    """Every pair stage 3 made, with its side and what left it out (None, "review" or "contamination")."""
    kept = [{**r, "side": side, "left_out": None} for side in SIDES for r in artifacts.load(config, side, REVIEW)]
    return kept + [{**r, "left_out": r.pop("reason")} for r in artifacts.load_if_present(config, "excluded", [])]


def review_data(config: PipelineConfig) -> dict:
    """Everything the page shows: pairs (kept and left out) with flags and their source passages, documents, counts."""
    review = load_review(artifacts.review_file(config))
    stats = artifacts.load(config, "stats", REVIEW)
    chunks = {c["id"]: Chunk.model_validate(c) for c in artifacts.load(config, "chunks", REVIEW)}
    records = _records(config)
    contaminated = {p["id"]: p for p in stats.get("contamination", {}).get("pairs", [])}
    duplicates = near_duplicates([(r["id"], r["question"]) for r in records])
    pairs = []
    for r in records:
        passage = "\n\n".join(chunks[c].text for c in r["chunk_ids"] if c in chunks)
        answer = review.answer(r["id"], r.get("original_answer") or r["answer"])
        pairs.append({
            "id": r["id"], "side": r["side"], "type": r["type"], "doc": r["doc_sha256"], "question": r["question"],
            "answer": answer, "original_answer": review.corrections[r["id"]].original if r["id"] in review.corrections
            else None, "judge": r.get("judge"), "chunk_ids": r["chunk_ids"],
            "sections": [" › ".join(chunks[c].section_path) for c in r["chunk_ids"] if c in chunks],
            "highlights": {c: highlights(answer, chunks[c].text) for c in r["chunk_ids"] if c in chunks},
            "flags": pair_flags(r["question"], answer, passage, duplicates.get(r["id"]), contaminated.get(r["id"])),
            "decontaminated": r["left_out"] == "contamination",
            "excluded": r["id"] in review.excluded_pairs})  # or its document: "documents" below
    documents = {}
    for doc in artifacts.load_if_present(config, "metadata", []):
        if doc.get("sha256"):
            documents[doc["sha256"]] = {"title": doc.get("title") or doc["url"].rsplit("/", 1)[-1], "url": doc["url"]}
    used = {c for p in pairs for c in p["chunk_ids"]}
    return {
        "pairs": pairs,
        "chunks": {c: chunks[c].text for c in sorted(used) if c in chunks},
        "documents": {sha: {**documents.get(sha, {"title": sha[:12], "url": None}),
                            "excluded": sha in review.excluded_documents} for sha in sorted({p["doc"] for p in pairs})},
        "stats": {side: stats["split"][f"{side}_pairs"] for side in SIDES}
        | {"excluded_by_review": stats.get("review", {}).get("excluded_pairs", 0),
           "contamination": stats.get("contamination")},
    }


Kind = Literal["pairs", "documents"]


class Problem(BaseModel):
    detail: str


class Counts(BaseModel):
    """review.json's verdicts after the change."""

    excluded_pairs: int
    excluded_documents: int
    corrections: int


class Why(BaseModel):
    why: str = Field("", max_length=500)


class NewAnswer(Why):
    answer: str = Field(min_length=1, max_length=4000)


def create_app(config: PipelineConfig, token: str | None = None) -> FastAPI:
    """The review app on ``config``'s dataset; with ``token``, /api needs it as a bearer token."""
    app = FastAPI(title="QA dataset review", docs_url=None, redoc_url=None)
    app.add_middleware(FullAllowHeader, routes=app.routes)
    path, lock = artifacts.review_file(config), threading.Lock()

    def authorised(request: Request) -> None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token is not None and not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token: open the address pipeline.py --review printed",
                                headers={"WWW-Authenticate": "Bearer"})

    def known(kind: Kind, key: str) -> dict:
        """The pair (kind "pairs") or a pair of the document ("documents"); 404 when the dataset has none."""
        found = next((r for r in _records(config) if r["id" if kind == "pairs" else "doc_sha256"] == key), None)
        if found is None:
            raise HTTPException(404, f"no {kind[:-1]} {key!r} in the dataset (stage 3 rerun since the page loaded? "
                                     "reload it)")
        return found

    def change(edit) -> Counts:
        with lock:
            review = load_review(path)
            edit(review)
            save_review(path, review)
        return Counts(excluded_pairs=len(review.excluded_pairs), excluded_documents=len(review.excluded_documents),
                      corrections=len(review.corrections))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    api = [Depends(authorised)]
    unauthorised = {401: {"model": Problem, "description": "Missing or wrong token (the app has one beyond loopback)"}}
    unknown = unauthorised | {400: {"model": Problem, "description": "The body is not JSON"},
                              404: {"model": Problem, "description": "No such pair or document in the dataset"}}

    @app.get("/api/data", dependencies=api, responses=unauthorised)
    def data() -> dict:
        return review_data(config)

    def excluded(review: Review, kind: Kind) -> dict[str, Verdict]:
        return review.excluded_pairs if kind == "pairs" else review.excluded_documents

    @app.put("/api/{kind}/{key}/exclusion", dependencies=api, responses=unknown)
    def exclude(kind: Kind, key: str, body: Why) -> Counts:
        """Leave out a pair (kind "pairs", its id) or a whole document ("documents", its sha256)."""
        known(kind, key)
        return change(lambda r: excluded(r, kind).__setitem__(key, Verdict(why=body.why)))

    @app.delete("/api/{kind}/{key}/exclusion", dependencies=api, responses=unauthorised)
    def include(kind: Kind, key: str) -> Counts:
        return change(lambda r: excluded(r, kind).pop(key, None))

    @app.put("/api/pairs/{pair_id}/correction", dependencies=api, responses=unknown)
    def correct(pair_id: str, body: NewAnswer) -> Counts:
        pair = known("pairs", pair_id)
        original = pair.get("original_answer") or pair["answer"]
        return change(lambda r: r.corrections.__setitem__(
            pair_id, Correction(answer=body.answer.strip(), original=original, why=body.why)))

    @app.delete("/api/pairs/{pair_id}/correction", dependencies=api, responses=unauthorised)
    def uncorrect(pair_id: str) -> Counts:
        return change(lambda r: r.corrections.pop(pair_id, None))

    return app
