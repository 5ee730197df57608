"""Stopping the gateway's background tasks.

``stop_tasks(*tasks)``: cancel and wait until every task has ended, repeating the cancel. Python
3.11's ``asyncio.wait_for`` returns an inner result that arrives in the same loop iteration as a
cancellation and drops the cancellation (bpo-42130, fixed in 3.12). redis-py calls ``wait_for``
when it connects, so a loop such as the readiness gauge, cancelled at that moment, went on to its
next sleep and a single ``cancel(); await task`` waited for it forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

log = logging.getLogger(__name__)

# How long a cancelled task gets before it is cancelled again.
RECANCEL_S: Final = 0.1


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
