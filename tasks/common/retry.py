"""How long to wait before trying a transient failure again: downloads and LLM calls alike.

Exponential backoff with full jitter (so many clients that failed together do not retry
together), capped; a server's Retry-After wins, under the same cap.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
    if retry_after is not None:
        return min(retry_after, max_s)
    return random.uniform(0, min(max_s, base_s * 2**attempt))


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (it may be a number of seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
