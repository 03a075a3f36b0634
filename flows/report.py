"""What a stage tells its user: one-line summaries and progress bars.

Summaries go to the Prefect run log (visible in the UI) and to stdout (visible on the
CLI, where Prefect's own console chatter is turned down to warnings). Progress bars go to
stderr and only on a terminal, so piped output stays clean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_stderr = Console(stderr=True)


def say(message: str) -> None:
    print(message, flush=True)
    with suppress(MissingContextError):
        get_run_logger().info(message)


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
