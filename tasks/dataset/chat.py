"""The conversations stage 4 trains on, one per pair."""

from __future__ import annotations

import json
from collections.abc import Iterable

from core.prompts import system_prompt
from tasks.dataset.pairs import QARecord


def chat_view(record: QARecord, domain: str) -> dict:
    """The conversation stage 4 trains on: the shared system prompt, the question, the answer."""
    return {"id": record.id, "messages": [
        {"role": "system", "content": system_prompt(domain)},
        {"role": "user", "content": record.question},
        {"role": "assistant", "content": record.answer},
    ]}


def chat_jsonl(records: Iterable[QARecord], domain: str) -> str:
    """train_chat.jsonl's text: one conversation a line."""
    return "".join(json.dumps(chat_view(record, domain), ensure_ascii=False) + "\n" for record in records)
