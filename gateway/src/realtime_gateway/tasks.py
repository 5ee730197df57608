"""The gateway's background tasks.

``Background``: the tasks a component starts and does not await where it starts them (a send
retried until acknowledged, a socket ended, a batch flushed), kept referenced until they end (the
event loop holds tasks only weakly) so that a shutdown can wait for them; a task that fails is
logged.

``stop_tasks(*tasks)``: cancel and wait until every task has ended, repeating the cancel. Python
3.11's ``asyncio.wait_for`` returns an inner result that arrives in the same loop iteration as a
cancellation and drops the cancellation (bpo-42130, fixed in 3.12). redis-py calls ``wait_for``
when it connects, so a loop such as the readiness gauge, cancelled at that moment, went on to its
next sleep and a single ``cancel(); await task`` waited for it forever.

``start_inline(coro)``: run a coroutine right here, without a task, until it finishes or waits;
what is left of a waiting one (``Suspended``) is awaited by whichever task takes it over. The
socket reader (``transport/inline.py``) and the Redis readers (``state/multiplex.py``) start
handlers this way inside ``data_received``, one event-loop pass sooner than a task would.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine, Generator
from typing import Any, Final

log = logging.getLogger(__name__)

# How long a cancelled task gets before it is cancelled again.
RECANCEL_S: Final = 0.1


class Background:
    __slots__ = ("_name", "_tasks")

    def __init__(self, name: str) -> None:
        self._name = name  # for the log line of a failed task
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("%s background task failed: %r", self._name, exc)

    async def wait(self, within: float | None = None) -> None:
        """Until every task started so far has ended, or ``within`` seconds (they run on)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` (``None`` and the calling task are skipped) and wait until all have ended.

    A task that ended with an error other than its cancellation is logged, not raised: stopping
    goes on with the rest. When the caller is cancelled meanwhile (it is itself being stopped, by
    this function too, with these tasks stopped in its cleanup), its tasks are still stopped first,
    then the cancellation is raised: an interrupted cleanup would leave them running.
    """
    current = asyncio.current_task()
    pending = {t for t in tasks if t is not None and t is not current}
    ended: list[asyncio.Task[Any]] = []
    interrupted = False
    while pending:
        for task in pending:
            task.cancel()
        try:
            done, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        except asyncio.CancelledError:
            interrupted = True
            continue
        ended.extend(done)
    for task in ended:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("task %s ended with %r while stopping", task.get_name(), exc)
    if interrupted:
        raise asyncio.CancelledError


class Suspended:
    """A handler coroutine that waited while it ran inline: awaiting this hands what it waits
    for to the awaiting task and drives the coroutine on, in the context it started in."""

    __slots__ = ("_coro", "_ctx", "_step")

    def __init__(self, coro: Coroutine[Any, Any, None], step: Any, ctx: contextvars.Context) -> None:
        self._coro = coro
        self._step = step
        self._ctx = ctx

    def __await__(self) -> Generator[Any, Any, None]:
        coro, ctx, step = self._coro, self._ctx, self._step
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the awaiting task: a cancellation
                try:
                    step = ctx.run(coro.throw, exc)
                except StopIteration:
                    return
            else:
                try:
                    step = ctx.run(coro.send, sent)
                except StopIteration:
                    return


def start_inline(coro: Coroutine[Any, Any, None]) -> Suspended | None:
    """Run ``coro`` in a copy of the current context until it finishes (None) or waits (what is
    left of it, to run on in that context). Its exceptions propagate."""
    ctx = contextvars.copy_context()
    try:
        step = ctx.run(coro.send, None)
    except StopIteration:
        return None
    return Suspended(coro, step, ctx)
