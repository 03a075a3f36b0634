"""Structured JSON logs: app events to api.log, one line per request to requests.log, both rotated.

The request id is bound into structlog's context variables by the middleware, so every
line logged while serving a request carries it. Tokens and secrets are never logged.
"""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

import structlog


def configure_logging(logs_dir: Path, max_bytes: int, backups: int) -> tuple[structlog.stdlib.BoundLogger, ...]:
    """Return (api logger, request logger) writing JSON lines under ``logs_dir``."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(), wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False)
    loggers = []
    for name, file in (("gateway.api", "api.log"), ("gateway.requests", "requests.log")):
        std = logging.getLogger(name)
        for handler in list(std.handlers):
            std.removeHandler(handler)
            handler.close()
        handler = RotatingFileHandler(logs_dir / file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        std.addHandler(handler)
        std.setLevel(logging.INFO)
        std.propagate = False
        loggers.append(structlog.get_logger(name))
    return loggers[0], loggers[1]
