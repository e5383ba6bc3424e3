"""``kill -USR1 <pid>``: log the stack of every asyncio task of a role process.

A consumer that holds its partitions but handles nothing, or a gate that stopped answering,
is idle in the event loop's ``select`` as far as a thread dump (``py-spy dump``) can tell:
what waits, and on what, lives in the tasks' coroutine frames. This handler writes them to
the process's log at WARNING, one entry per task, without stopping anything::

    kill -USR1 $(pgrep -f 'coffeebus consume fanout')
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

DUMP_SIGNAL = signal.SIGUSR1


def await_chain(coro: Any, limit: int = 40) -> Iterator[FrameType]:
    """The frames of `coro` and of what it awaits, outermost first.

    ``Task.print_stack`` shows only a task's own coroutine frame; the await that actually
    blocks (a driver's socket read, a lock) sits at the end of the ``cr_await`` chain.
    """
    for _ in range(limit):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            return
        yield frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)


def format_tasks() -> str:
    """Every task of the running loop, with the chain of awaits it is suspended in."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    out = io.StringIO()
    out.write(f"{len(tasks)} asyncio tasks\n")
    for task in tasks:
        out.write(f"--- {task.get_name()}\n")
        for frame in await_chain(task.get_coro()):
            code = frame.f_code
            out.write(f"    {code.co_filename}:{frame.f_lineno} in {code.co_name}\n")
    return out.getvalue()


def log_tasks() -> None:
    """Log `format_tasks` at WARNING (the signal handler)."""
    log.warning("task dump on SIGUSR1\n%s", format_tasks())


def install_task_dump(loop: asyncio.AbstractEventLoop) -> None:
    """Make SIGUSR1 log every task's stack (module docstring)."""
    loop.add_signal_handler(DUMP_SIGNAL, log_tasks)
