"""What a stage tells its user: one-line summaries, progress bars, artifact tables, failures.

Summaries go to the Prefect run log (visible in the UI) and to stdout (visible on the
CLI, where Prefect's own console chatter is turned down to warnings); the pipeline's summary
artifact collects them per stage. A document a stage had to leave out is said the same way,
once, in one short line, and is a WARNING in the run log with its details (a filter on
warnings finds every one); the summary counts and lists them apart. Progress bars go to stderr and only on a terminal, so piped
output stays clean.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field

from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.stages import STAGES

_stderr = Console(stderr=True)
PRINTED = "printed_by_the_cli"  # a log record's attribute: the CLI has printed this line already


@dataclass
class Said:
    """What a stage told its user: its summary lines, and one line per document it left out."""

    lines: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


_said: ContextVar[Said | None] = ContextVar("said", default=None)


def say(message: str) -> None:
    print(message, flush=True)
    if (said := _said.get()) is not None:
        said.lines.append(message)
    with suppress(MissingContextError):
        get_run_logger().info(message, extra={PRINTED: True})


def say_skipped(message: str, detail: str | None = None) -> None:
    """A document left out: printed like ``say``, listed apart in the summary, a WARNING (with ``detail``) in the run log."""
    print(message, flush=True)
    if (said := _said.get()) is not None:
        said.skipped.append(message)
    with suppress(MissingContextError):
        get_run_logger().warning(message + (f"\n{detail}" if detail else ""), extra={PRINTED: True})


@contextmanager
def recording() -> Iterator[Said]:
    """Collect what ``say`` and ``say_skipped`` print inside (stage flows too: their threads carry the context along)."""
    said = Said()
    token = _said.set(said)
    try:
        yield said
    finally:
        _said.reset(token)


def table_rows(values: dict, prefix: str = "") -> list[dict]:
    """{"metric", "value"} rows, nested dicts as one row per leaf ("split.train_pairs"): a table the UI shows whole."""
    rows = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            rows += table_rows(value, f"{prefix}{key}.")
        else:
            rows.append({"metric": f"{prefix}{key}",
                         "value": ", ".join(map(str, value)) if isinstance(value, list | tuple) else value})
    return rows


class _FailureOnce(logging.Filter):
    """Prefect logs a failure, with the engine's traceback, at every level it passes through (the task, the
    stage's flow, the pipeline, the deployment's run). Here the first becomes one line naming the error, its
    traceback a debug record beside it; the repeats are dropped. (Each level's "Finished in state" line stays.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.levelno >= logging.ERROR and record.exc_info else None
        if error is None:
            return True
        if getattr(error, "_logged_once", False):
            return False
        try:
            error._logged_once = True
        except AttributeError:  # an exception type without attributes: leave the record as Prefect made it
            return True
        traceback = logging.makeLogRecord({**record.__dict__, "levelno": logging.DEBUG, "levelname": "DEBUG",
                                           "msg": f"traceback of {type(error).__name__}", "args": None})
        logging.getLogger(record.name).handle(traceback)
        record.msg, record.args, record.exc_info, record.exc_text = f"{type(error).__name__}: {error}", None, None, None
        return True


def log_failures_once() -> None:
    """Install the filter on Prefect's run loggers (idempotent)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _FailureOnce) for f in logger.filters):
            logger.addFilter(_FailureOnce())


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Yield ``advance(completed=None, total=None, note=None)``: one more done, or ``completed`` of ``total``
    done; ``note`` (e.g. the latest loss) stays after the description until the next one.

    The bar is drawn only on a terminal and only when there is work.
    """
    if total == 0 or not _stderr.is_terminal:
        yield lambda completed=None, total=None, note=None: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_stderr) as bar:
        task_id = bar.add_task(description, total=total)

        def advance(completed: int | None = None, total: int | None = None, note: str | None = None) -> None:
            bar.update(task_id, advance=1 if completed is None else None, completed=completed, total=total,
                       description=f"{description} {note}" if note else None)

        yield advance


def summary_markdown(outcomes: dict[str, tuple[str, Said]], ui: str | None) -> str:
    """A table of stages (outcome, a link to the stage's artifact), then what each stage said, then the documents
    left out, counted in the headline.

    The UI draws table cells on one line, however long: seen in a browser, a stage's figures (or a failure's
    message) in a cell pushed the artifact links out of sight. The table keeps short cells; the rest is lists.
    """
    names = {stage.key: stage for stage in STAGES}

    def link(key: str) -> str:
        artifact = names[key].artifact if key in names else None
        if artifact is None:
            return ""
        return f"[{artifact}]({ui.rstrip('/')}/artifacts/key/{artifact})" if ui else f"`{artifact}`"

    def title(key: str) -> str:
        return f"{key} {names[key].name if key in names else 'fine-tune (deployment)'}"

    rows = [f"| {title(key)} | {outcome.split(':', 1)[0]} | {link(key)} |" for key, (outcome, _) in outcomes.items()]
    said = [f"- **{title(key)}** {outcome}" + (": " + "; ".join(s.lines) if s.lines else "")
            for key, (outcome, s) in outcomes.items() if s.lines or outcome.startswith("failed")]
    failed = [key for key, (outcome, _) in outcomes.items() if outcome.startswith("failed")]
    skipped = [(key, line) for key, (_, s) in outcomes.items() for line in s.skipped]
    verdict = (f"**Stage {failed[0]} failed**: Retry the run (or run the same command again) to resume: "
               "finished work is kept." if failed else "**Every stage completed.**")
    if skipped:
        verdict += f" {len(skipped)} document{'s' if len(skipped) > 1 else ''} left out (below)."
    listing = ["", "## Documents left out", "", *(f"- stage {key}: {line}" for key, line in skipped)] if skipped else []
    return "\n".join(["# Pipeline run", "", verdict, "", "| stage | outcome | artifact |", "|---|---|---|", *rows,
                      *(["", "## What each stage said", "", *said] if said else []), *listing])
