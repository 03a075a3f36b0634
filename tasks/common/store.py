"""An index of records kept as one JSON file, updated through a crash-safe journal.

Long stages record each finished item as it completes (one fsynced JSON line); the JSON
file is rewritten atomically at the end. A process killed midway leaves the journal, and
the next run starts from everything that had finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

from core import artifacts
from core.config import PipelineConfig
from core.files import append_journal, atomic_write_json, read_journal
from tasks.common.records import Document

M = TypeVar("M", bound=BaseModel)


class RecordIndex(Generic[M]):
    def __init__(self, path: Path, model: type[M], key: str) -> None:
        self.path = path
        self.journal = path.with_name(f".{path.name}.journal")
        self.model = model
        self.key = key
        self._items: dict[str, M] = {}
        if path.exists():
            for raw in json.loads(path.read_text(encoding="utf-8")):
                self._put(model.model_validate(raw))
        for raw in read_journal(self.journal):
            self._put(model.model_validate(raw))

    def _put(self, item: M) -> None:
        self._items[getattr(item, self.key)] = item

    def get(self, key: str) -> M | None:
        return self._items.get(key)

    def values(self) -> list[M]:
        return list(self._items.values())

    def record(self, item: M) -> None:
        append_journal(self.journal, item.model_dump(mode="json"))
        self._put(item)

    def save(self) -> None:
        atomic_write_json(self.path, [item.model_dump(mode="json") for item in self._items.values()])
        self.journal.unlink(missing_ok=True)


def metadata_index(config: PipelineConfig) -> RecordIndex[Document]:
    """Stage 1's outcome for every source (metadata.json), keyed by its URL: stage 1 writes it, stage 2 reads it."""
    return RecordIndex(artifacts.path(config, "metadata"), Document, key="url")
