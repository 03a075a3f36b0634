"""Read W&B offline run folders without wandb's own reader, which has no public API for them.

A ``.wandb`` file is a LevelDB-style log (32 KiB blocks, each record a 7-byte header: CRC32,
length, type, then a protobuf ``Record``; records may span blocks as first/middle/last parts),
after a 7-byte file header ``:W&B``, magic, version. Reading it here, not through the code that
wrote it, is the point: the test sees what ``wandb sync`` would upload.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, LAST = 1, 4


def _records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B", f"{path} is not a W&B run log"
    at, parts = HEADER, b""
    while at + HEADER <= len(data):
        left = BLOCK - at % BLOCK
        if left < HEADER:  # the rest of a block too short for a header is padding
            at += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[at:at + HEADER])
        if length == 0 and kind == 0:
            break
        parts += data[at + HEADER:at + HEADER + length]
        at += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def offline_runs(logs: Path) -> list[dict]:
    """Every offline run under ``logs``/wandb: name, project, group, job type, history rows, final summary."""
    runs = []
    for log in sorted((logs / "wandb").glob("offline-run-*/run-*.wandb")):
        run = {"history": [], "summary": {}}
        for record in _records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.update(name=record.run.display_name, project=record.run.project, group=record.run.run_group,
                           job_type=record.run.job_type)
            elif kind == "history":
                run["history"].append(_items(record.history.item))
            elif kind == "summary":
                run["summary"].update(_items(record.summary.update))
        runs.append(run)
    return runs
