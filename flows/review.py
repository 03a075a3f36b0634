"""``pipeline.py --review``: serve the review app on the configured dataset until interrupted.

Loopback needs no token; any other address gets one (REVIEW_TOKEN, else a fresh random one),
carried in the printed address's fragment so it never reaches a server log.
"""

from __future__ import annotations

import secrets

import uvicorn

from core import artifacts
from core.config import PipelineConfig, Secrets
from core.gateway import is_loopback
from tasks.dataset.review_app import REVIEW, create_app


def review_address(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"#token={token}" if token else "")


def serve_review(config: PipelineConfig, host: str, port: int) -> None:
    artifacts.require(config, "stats", REVIEW)  # stage 3 first: one line naming it, before a server starts
    given = Secrets().review_token
    token = None if is_loopback(host) and given is None else (
        given.get_secret_value() if given is not None else secrets.token_urlsafe(24))
    print(f"review: open {review_address(host, port, token)} (keys: j/k move, x exclude, e edit, u undo; "
          f"verdicts go to {artifacts.review_file(config)}; Ctrl+C stops)", flush=True)
    uvicorn.run(create_app(config, token), host=host, port=port, log_level="warning")
