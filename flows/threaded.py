"""Stage flows with blocking bodies (training, evaluation, conversion), run off the event loop.

The pipeline flow is async. A sync subflow called from it blocks the parent's event loop for
its whole run, and Prefect's sync engine ends every flow run by joining its heartbeat thread
(up to a second per stage, which is most of a rerun that has nothing to do). Wrapping the
blocking body as an async flow that runs it with ``asyncio.to_thread`` (the pattern Prefect
documents for sync work in async flows) avoids both; the body still sees the flow run's
context (tasks, artifacts, logs), since ``to_thread`` carries the context variables along.

One consequence: Prefect's dual sync/async helpers (``create_*_artifact``, ``State.result``)
see an async flow and would hand back coroutines, so these bodies call them with ``_sync=True``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from prefect import Flow, flow

P = ParamSpec("P")
R = TypeVar("R")


def threaded_flow(name: str) -> Callable[[Callable[P, R]], Flow[P, Awaitable[R]]]:
    def decorate(body: Callable[P, R]) -> Flow[P, Awaitable[R]]:
        @functools.wraps(body)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            return await asyncio.to_thread(body, *args, **kwargs)

        # the body's annotations are strings resolvable only in its own module: hand Prefect the types
        run.__signature__ = inspect.signature(body, eval_str=True)  # type: ignore[attr-defined]
        return flow(name=name)(run)

    return decorate
