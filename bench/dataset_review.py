"""Benchmark: the dataset a user reviews, made from real manuals no one here wrote (Debian's documentation PDFs).

    .venv/bin/python -m bench.dataset_review [--folder build/real_pdfs] [--ratios 0.6 0.2 0.2] [--seeds 1 2 3 4 5]

Stages 1–3 of the local profile run on the real PDFs (harness/real_corpus.py), then, side by side in one run:
- The split: each side's share of pairs as stage 3 placed the documents (by size), read back from the files it
  wrote, beside placing the same documents by their seeded hash alone (the rule before) — over several seeds,
  the largest distance of a side from its ratio (goal: ≤ 10 points).
- The contamination check: our exact longest-shared-run check beside the reference way of lm-evaluation-harness
  (a set of every training 13-gram, each held-out pair's 13-grams looked up), on the real held-out pairs plus
  planted ones copying 13 and 12 words of a training chunk: the same pairs flagged, and the time of each.
- The review page: the time /api/data takes through HTTP on loopback (every pair with its passage, highlights and
  flags) beside reading the three dataset files, and its size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from core.config import load_config
from harness.app_server import served_app
from harness.project import REPO, qa_dataset, run_pipeline, write_profile
from harness.real_corpus import build_real_corpus
from tasks.common.questions import words
from tasks.dataset.contamination import NGRAM, check
from tasks.dataset.review_app import create_app
from tasks.dataset.split import SIDES, _fill, _score, _side_of, assign_documents

GOAL = 0.10
PLANTED = 20


def _shares(sides: dict[str, str], sizes: Counter) -> dict[str, float]:
    total = sum(sizes.values())
    return {side: sum(n for doc, n in sizes.items() if sides[doc] == side) / total for side in SIDES}


def _off(shares: dict[str, float], ratios: dict[str, float]) -> float:
    return max(abs(shares[side] - ratios[side]) for side in SIDES)


def split_report(root: Path, ratios: dict[str, float], seeds: list[int]) -> None:
    dataset = qa_dataset(root / "data/qa_dataset")
    sizes = Counter(r["doc_sha256"] for side in SIDES for r in dataset[side])
    written = {side: len(dataset[side]) / sum(sizes.values()) for side in SIDES}
    print(f"split of {sum(sizes.values())} pairs from {len(sizes)} documents (pairs each: {sorted(sizes.values())}), "
          f"ratios {' / '.join(f'{ratios[s]:.2f}' for s in SIDES)}")
    print(f"  stage 3's files (seed 42):     {' / '.join(f'{written[s]:.2f}' for s in SIDES)}   "
          f"largest distance {_off(written, ratios):.3f}")
    for seed in seeds:
        ours = _shares(assign_documents(sorted(sizes), ratios, seed, None, sizes), sizes)
        scores = {doc: _score(seed, doc) for doc in sizes}
        by_hash = {doc: _side_of(scores[doc], ratios, SIDES) for doc in sizes}
        _fill(by_hash, sorted(sizes), SIDES, scores, ratios)  # the rule before: by hash, every side given a document
        hashed = _shares(by_hash, sizes)
        print(f"  seed {seed:>3}: by size {' / '.join(f'{ours[s]:.2f}' for s in SIDES)} (off {_off(ours, ratios):.3f})"
              f"   by hash alone {' / '.join(f'{hashed[s]:.2f}' for s in SIDES)} (off {_off(hashed, ratios):.3f})")
    print(f"  goal: every side within {GOAL:.2f} of its ratio")


def _ngrams(text: str) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i:i + NGRAM]) for i in range(len(w) - NGRAM + 1)}


def contamination_report(root: Path) -> None:
    dataset = qa_dataset(root / "data/qa_dataset")
    sides = json.loads((root / "data/qa_dataset/split.json").read_text())
    chunks = [c["text"] for c in json.loads((root / "data/chunks/chunks.json").read_text())
              if sides.get(c["doc_sha256"]) == "train"]
    pairs = [(r["question"], r["answer"]) for r in dataset["train"]]
    held_out = {side: [(r["id"], r["question"], r["answer"]) for r in dataset[side]] for side in SIDES[1:]}
    # planted: held-out answers copying 13 words of a training chunk (to be flagged) and 12 words (not to be)
    runs = [words(text) for text in chunks if len(words(text)) >= 40]
    for n, run in enumerate(runs[:PLANTED]):
        held_out["test"] += [(f"planted-13-{n}", "What is planted?", " ".join(run[10:10 + NGRAM])),
                             (f"planted-12-{n}", "What is planted?", " ".join(run[10:10 + NGRAM - 1]))]
    started = time.perf_counter()
    ours = {o.id for o in check(held_out, pairs, chunks) if o.contaminated}
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    grams = set().union(*(_ngrams(t) for t in chunks), *(_ngrams(t) for pair in pairs for t in pair))
    reference = {pair_id for items in held_out.values() for pair_id, q, a in items
                 if (_ngrams(q) | _ngrams(a)) & grams}
    reference_s = time.perf_counter() - started
    training_words = sum(len(words(t)) for t in chunks) + sum(len(words(t)) for pair in pairs for t in pair)
    print(f"contamination check over {training_words} training words, {sum(map(len, held_out.values()))} held-out pairs:")
    planted = sum(i.startswith("planted-13") for i in ours)
    print(f"  flagged: ours {len(ours)} ({planted} of {PLANTED} planted 13-word copies, "
          f"{sum(i.startswith('planted-12') for i in ours)} of {PLANTED} planted 12-word ones), 13-gram set "
          f"(lm-evaluation-harness's way) {len(reference)}; the same pairs: {ours == reference}")
    print(f"  time: ours {ours_s:.2f} s, 13-gram set {reference_s:.2f} s ({ours_s / reference_s:.2f}×; ours also "
          f"gives every pair's exact longest run)")


def review_report(root: Path) -> None:
    folder = root / "data/qa_dataset"
    started = time.perf_counter()
    for _ in range(3):
        files = [json.loads((folder / f"{side}.json").read_text()) for side in SIDES]
    files_s = (time.perf_counter() - started) / 3
    with served_app(create_app(load_config(root / "config.yaml"))) as url, httpx.Client(timeout=120) as client:
        client.get(f"{url}/api/data").raise_for_status()  # first request: imports
        started = time.perf_counter()
        for _ in range(3):
            reply = client.get(f"{url}/api/data")
        api_s = (time.perf_counter() - started) / 3
    data = reply.json()
    print(f"review page data: {len(data['pairs'])} pairs ({sum(map(len, files))} in the files), "
          f"{len(reply.content) / 1e6:.2f} MB, {api_s:.3f} s per /api/data vs {files_s:.4f} s reading the files "
          f"({api_s / files_s:.0f}×: passages, highlights, near-duplicates and flags)")
    flags = Counter(flag for pair in data["pairs"] for flag in pair["flags"])
    print(f"  flags raised: {dict(flags)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=REPO / "build/real_pdfs")
    parser.add_argument("--ratios", type=float, nargs=3, default=[0.6, 0.2, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 42])
    args = parser.parse_args()
    build_real_corpus(args.folder)
    ratios = dict(zip(SIDES, args.ratios, strict=True))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = write_profile(root, {"data_collector": {"local": {"dir": str(args.folder.resolve())}},
                                      "dataset_generator": {"split": ratios}})
        done = run_pipeline(config, "--start", "1", "--end", "3", timeout=3600)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        split_report(root, ratios, args.seeds)
        contamination_report(root)
        review_report(root)


if __name__ == "__main__":
    main()
