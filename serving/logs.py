"""Structured JSON logs: app events to api.log, one line per request to requests.log, both rotated.

Lines are handed to a queue and written by a thread of their own, so a slow disk never stalls
the event loop. The request id is bound into structlog's context variables by the middleware,
so every line logged while serving a request carries it. Tokens and secrets are never logged.
With several workers each writes files of its own (``api-<pid>.log``): one rotating file
shared by processes would lose lines when they rotate it.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass
from logging.handlers import QueueHandler, QueueListener, RotatingFileHandler
from pathlib import Path

import structlog


@dataclass
class Logs:
    api: structlog.stdlib.BoundLogger
    requests: structlog.stdlib.BoundLogger
    writer: QueueListener

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        self.writer.stop()


def configure_logging(logs_dir: Path, max_bytes: int, backups: int, suffix: str = "") -> Logs:
    logs_dir.mkdir(parents=True, exist_ok=True)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(), wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True)
    lines: queue.SimpleQueue = queue.SimpleQueue()
    files = []
    for name, file in (("gateway.api", "api"), ("gateway.requests", "requests")):
        std = logging.getLogger(name)
        for handler in list(std.handlers):
            std.removeHandler(handler)
            handler.close()
        handler = RotatingFileHandler(logs_dir / f"{file}{suffix}.log", maxBytes=max_bytes, backupCount=backups,
                                      encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(lambda record, name=name: record.name == name)
        files.append(handler)
        std.addHandler(QueueHandler(lines))
        std.setLevel(logging.INFO)
        std.propagate = False
    writer = QueueListener(lines, *files, respect_handler_level=False)
    writer.start()
    return Logs(structlog.get_logger("gateway.api"), structlog.get_logger("gateway.requests"), writer)
