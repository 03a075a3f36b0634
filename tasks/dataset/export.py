"""Export a QA dataset file to other fine-tuning formats, streaming record by record.

    python -m tasks.dataset.export alpaca|sharegpt|openai INPUT.json OUTPUT.jsonl [--domain pregnancy]

INPUT is one of our ``train.json``/``eval.json`` files (a JSON array); it is parsed
incrementally (ijson), so exports of large datasets run in constant memory.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import ijson

from core.files import atomic_writer
from core.prompts import system_prompt

FORMATS = ("alpaca", "sharegpt", "openai")


def convert(record: dict, fmt: str, domain: str) -> dict:
    question, answer = record["question"], record["answer"]
    if fmt == "alpaca":
        return {"instruction": question, "input": "", "output": answer, "system": system_prompt(domain)}
    if fmt == "sharegpt":
        return {"conversations": [{"from": "system", "value": system_prompt(domain)},
                                  {"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
    if fmt == "openai":
        return {"messages": [{"role": "system", "content": system_prompt(domain)},
                             {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    raise ValueError(f"unknown format '{fmt}': choose one of {', '.join(FORMATS)}")


def stream_records(path: Path) -> Iterator[dict]:
    with path.open("rb") as handle:
        yield from ijson.items(handle, "item")


def export(source: Path, target: Path, fmt: str, domain: str) -> int:
    """Write one JSON line per record of ``source`` in ``fmt``; returns the number written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}': choose one of {', '.join(FORMATS)}")
    count = 0
    with atomic_writer(target, "w") as out:
        for record in stream_records(source):
            out.write(json.dumps(convert(record, fmt, domain), ensure_ascii=False) + "\n")
            count += 1
    return count


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--domain", default="pregnancy")
    args = parser.parse_args()
    print(f"{export(args.input, args.output, args.format, args.domain)} records → {args.output}")
