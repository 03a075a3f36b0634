"""Crash safety: atomic writes and the journal that lets a killed stage resume."""

from __future__ import annotations

import json

import pytest

from core.files import atomic_write_json, atomic_writer
from tasks.common.records import Document
from tasks.common.store import RecordIndex


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_writer(target, "w") as handle:
        handle.write('{"v": 2, "half')
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_journal_survives_a_crash_and_ignores_a_torn_line(tmp_path):
    path = tmp_path / "metadata.json"
    index = RecordIndex(path, Document, key="url")
    index.record(Document(url="https://a/1.pdf", source="t", status="ok", sha256="a" * 64))
    index.record(Document(url="https://a/2.pdf", source="t", status="not_pdf"))
    # the process dies here: no save(); the last line it was writing is torn
    with index.journal.open("a") as handle:
        handle.write('{"url": "https://a/3.pdf", "sour')
    resumed = RecordIndex(path, Document, key="url")
    assert [d.url for d in resumed.values()] == ["https://a/1.pdf", "https://a/2.pdf"]
    resumed.record(Document(url="https://a/2.pdf", source="t", status="ok", sha256="b" * 64))
    resumed.save()
    assert not resumed.journal.exists()
    saved = json.loads(path.read_text())
    assert [(d["url"], d["status"]) for d in saved] == [("https://a/1.pdf", "ok"), ("https://a/2.pdf", "ok")]


def test_atomic_folder_is_all_or_nothing(tmp_path):
    from core.files import atomic_folder

    target = tmp_path / "adapter"
    with atomic_folder(target) as staging:
        (staging / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_folder(target) as staging:
        (staging / "weights").write_text("half")
        raise RuntimeError("crash while writing")
    assert (target / "weights").read_text() == "v1" and [p.name for p in tmp_path.iterdir()] == ["adapter"]
    with pytest.raises(FileExistsError, match="never overwritten"), atomic_folder(target, replace=False):
        pass
