"""How long to wait before trying a transient failure again: downloads and LLM calls alike.

Exponential backoff with full jitter (so many clients that failed together do not retry
together), capped; a server's Retry-After wins, under the same cap.
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
    if retry_after is not None:
        return min(retry_after, max_s)
    return random.uniform(0, min(max_s, base_s * 2**attempt))
