"""SIGUSR1 logs every asyncio task with the chain of awaits it is suspended in."""

from __future__ import annotations

import asyncio
import logging
import os

from telemetry.taskdump import DUMP_SIGNAL, format_tasks, install_task_dump


async def _innermost(gate: asyncio.Event) -> None:
    await gate.wait()


async def _outer(gate: asyncio.Event) -> None:
    await _innermost(gate)


async def test_the_dump_follows_awaits_to_where_a_task_blocks() -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(_outer(gate), name="stuck-handler")
    await asyncio.sleep(0)  # let it reach its await
    dump = format_tasks()
    section = dump.split("--- stuck-handler\n")[1].split("---")[0]
    lines = section.strip().splitlines()
    assert "in _outer" in lines[0]
    assert "in _innermost" in lines[1]
    assert "in wait" in lines[2]  # asyncio.Event.wait: what it actually waits on
    gate.set()
    await task


async def test_sigusr1_logs_the_dump() -> None:
    loop = asyncio.get_running_loop()
    install_task_dump(loop)
    gate = asyncio.Event()
    task = asyncio.create_task(_outer(gate), name="stuck-handler")
    dumps: list[logging.LogRecord] = []
    logged = asyncio.Event()

    class _Dumps(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            dumps.append(record)
            logged.set()

    logger = logging.getLogger("telemetry.taskdump")
    handler = _Dumps(logging.WARNING)
    logger.addHandler(handler)
    try:
        os.kill(os.getpid(), DUMP_SIGNAL)
        async with asyncio.timeout(10):
            await logged.wait()
    finally:
        logger.removeHandler(handler)
        loop.remove_signal_handler(DUMP_SIGNAL)
        gate.set()
        await task
    (record,) = dumps
    assert record.levelno == logging.WARNING
    assert "--- stuck-handler" in record.getMessage()
    assert "in _innermost" in record.getMessage()
