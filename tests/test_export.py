"""Exports to Alpaca, ShareGPT and OpenAI fine-tuning JSONL, streamed from our dataset files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.prompts import system_prompt
from harness.project import REPO
from tasks.dataset.export import export


@pytest.fixture
def dataset(tmp_path):
    records = [{"id": str(i), "question": f"Question {i}?", "answer": f"Answer {i}.", "type": "what"} for i in range(500)]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    return path


def test_each_format(dataset, tmp_path):
    expected = {
        "alpaca": {"instruction": "Question 0?", "input": "", "output": "Answer 0.", "system": system_prompt("pregnancy")},
        "sharegpt": {"conversations": [{"from": "system", "value": system_prompt("pregnancy")},
                                       {"from": "human", "value": "Question 0?"}, {"from": "gpt", "value": "Answer 0."}]},
        "openai": {"messages": [{"role": "system", "content": system_prompt("pregnancy")},
                                {"role": "user", "content": "Question 0?"}, {"role": "assistant", "content": "Answer 0."}]},
    }
    for fmt, first in expected.items():
        out = tmp_path / f"{fmt}.jsonl"
        assert export(dataset, out, fmt, "pregnancy") == 500
        lines = out.read_text().splitlines()
        assert len(lines) == 500 and json.loads(lines[0]) == first


def test_command_line_and_unknown_format(dataset, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tasks.dataset.export", "openai", str(dataset), str(tmp_path / "o.jsonl")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "500 records" in result.stdout
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        export(dataset, tmp_path / "x", "csv", "pregnancy")
