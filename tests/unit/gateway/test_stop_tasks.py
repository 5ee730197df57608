"""stop_tasks ends a background loop even when a cancellation is swallowed on the way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import pytest

from realtime_gateway.tasks import stop_tasks


class _Loop:
    """A background loop shaped like the readiness gauge: a library call, then a sleep."""

    def __init__(self) -> None:
        self.inner: asyncio.Future[int] | None = None
        self.at_call = asyncio.Event()
        self.passes = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.inner = loop.create_future()
            self.at_call.set()
            with contextlib.suppress(Exception):
                # The library call: redis-py connects through asyncio.wait_for.
                await asyncio.wait_for(self.inner, 10)
            self.at_call.clear()
            self.passes += 1
            await asyncio.sleep(0.05)


async def _at_the_library_call(worker: _Loop) -> asyncio.Future[int]:
    async with asyncio.timeout(2):
        await worker.at_call.wait()
    assert worker.inner is not None
    return worker.inner


async def test_a_cancel_that_arrives_with_the_result_is_repeated_until_the_loop_ends() -> None:
    worker = _Loop()
    task = asyncio.create_task(worker.run())
    inner = await _at_the_library_call(worker)
    # The reply and the cancel land in the same loop iteration.
    inner.set_result(1)
    async with asyncio.timeout(5):
        await stop_tasks(task)
    assert task.cancelled()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancel from 3.12 on")
async def test_the_race_is_real_a_single_cancel_is_lost() -> None:
    worker = _Loop()
    task = asyncio.create_task(worker.run())
    inner = await _at_the_library_call(worker)
    inner.set_result(1)
    task.cancel()
    await asyncio.wait([task], timeout=0.3)
    # The loop went round to its next library call: the cancel was dropped, so a single cancel
    # and an await would wait forever.
    assert not task.done() and worker.passes == 1 and worker.inner is not inner
    await stop_tasks(task)
    assert task.done()


async def test_none_and_the_calling_task_are_skipped_and_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failing = asyncio.create_task(fails(), name="failing")
    await asyncio.sleep(0)

    async def stops_itself() -> str:
        await stop_tasks(asyncio.current_task(), None)
        return "went on"

    with caplog.at_level(logging.WARNING, logger="realtime_gateway.tasks"):
        assert await asyncio.create_task(stops_itself()) == "went on"
        await stop_tasks(failing)
    assert failing.done() and not failing.cancelled()
    assert "failing" in caplog.text and "boom" in caplog.text


async def test_a_task_stopping_its_own_tasks_in_cleanup_finishes_that_before_it_ends() -> None:
    ignored = 0

    async def stubborn() -> None:
        # A child that needs a few cancels (and so more than one re-cancel period) to end.
        nonlocal ignored
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                ignored += 1
                if ignored >= 3:
                    raise

    child = asyncio.create_task(stubborn())

    async def parent() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await stop_tasks(child)

    outer = asyncio.create_task(parent())
    await asyncio.sleep(0)
    try:
        async with asyncio.timeout(5):
            # Re-cancels the parent while its cleanup waits for the child.
            await stop_tasks(outer)
        assert outer.cancelled()
        assert child.done(), "the parent ended while its child still ran"
        assert child.cancelled() and ignored == 3
    finally:
        await stop_tasks(child)  # so that a failure here does not hang the loop's teardown


async def test_background_keeps_its_tasks_until_they_end_and_logs_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from realtime_gateway.tasks import Background

    background = Background("unit")
    release = asyncio.Event()

    async def waits() -> str:
        await release.wait()
        return "done"

    async def fails() -> None:
        raise RuntimeError("boom")

    slow = background.spawn(waits(), name="slow")
    with caplog.at_level(logging.WARNING, logger="realtime_gateway.tasks"):
        background.spawn(fails())
        await background.wait(within=0.05)  # gives up on the slow one, which runs on
        assert "unit background task failed" in caplog.text and "boom" in caplog.text
    assert not slow.done() and slow.get_name() == "slow"
    release.set()
    async with asyncio.timeout(5):
        await background.wait()
    assert slow.result() == "done"
