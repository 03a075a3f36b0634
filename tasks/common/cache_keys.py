"""Cache keys made of content, for Prefect's task cache: the same bytes in, the same result out.

Paths and names never enter a key (a copy of the same weights elsewhere is a hit); the source
of the code that computes a result always does (a fix to the scoring or chunking code is a miss).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from pathlib import Path


@functools.cache
def source_hash(*modules: str) -> str:
    """Hash of the named modules' source files, read without importing them."""
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(name)
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()


def content_key(kind: str, content: object) -> str:
    return f"{kind}-" + hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
