"""The load side of `bench.conn_bench`: one process holding many idle SDK clients.

A worker is started by the orchestrator with a `Job` (which users, from which loopback
source addresses) and a pipe. It opens and logs in its connections, at most
`Job.in_flight` at a time, counting successes and failures in a shared array the
orchestrator reads for its progress line; then it answers commands on the pipe:

- ``("heartbeat", connections, seconds)``: that many of its clients send heartbeats back to
  back (one outstanding each) for that long; the answer counts round trips and keeps a
  sample of their times;
- ``("close",)``: reset every connection and exit.

Clients are built with no heartbeat task, no reconnect and no event queue, so an idle client
costs one reader task and its stream: the gate's idle timeout is set long for the run
instead (the orchestrator's job).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from sdk.client import Client
from sdk.transport import TransportKind

__all__ = ["FAILED", "OK", "Job", "run_load", "run_worker", "token_for"]

#: Indexes of the worker's shared counters.
OK = 0
FAILED = 1

#: Per worker, how many heartbeat round-trip times are kept for the percentiles.
RTT_SAMPLE = 20_000
CLOSE_TIMEOUT_S = 30.0


def token_for(user_id: int) -> str:
    """The token the benchmark imports for `user_id` (the workers log in with it)."""
    return f"bench-token-{user_id}"


@dataclass(frozen=True)
class Job:
    """What one worker connects: users `first_user` .. `first_user + count - 1`."""

    index: int
    host: str
    port: int
    transport: TransportKind
    first_user: int
    count: int
    #: Source addresses, used round robin (one address has ~28k ephemeral ports).
    sources: tuple[str, ...]
    in_flight: int
    connect_timeout_s: float


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_worker(job: Job, pipe: Connection, counters: SynchronizedArray[Any]) -> None:
    """Process entry point (multiprocessing target)."""
    run_load(_main(job, pipe, counters))


def run_load(main: Coroutine[Any, Any, None]) -> None:
    """Run a load process's `main` with every file it may open, on uvloop when installed."""
    raise_nofile()
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _main(job: Job, pipe: Connection, counters: SynchronizedArray[Any]) -> None:
    clients: list[Client] = []
    errors: dict[str, int] = {}
    gate = asyncio.Semaphore(job.in_flight)
    start = time.perf_counter()

    async def open_one(i: int) -> None:
        user_id = job.first_user + i
        client = Client(
            heartbeat_interval=None,
            reconnect=False,
            event_queue_size=0,
            auto_ack=False,
            connect_timeout=job.connect_timeout_s,
            request_timeout=job.connect_timeout_s,
        )
        async with gate:
            try:
                await client.connect(
                    job.host,
                    job.port,
                    transport=job.transport,
                    local_addr=(job.sources[i % len(job.sources)], 0),
                )
                await client.login(user_id, token_for(user_id))
            except Exception as exc:  # every failure is counted and named, none stops the run
                key = f"{type(exc).__name__}: {exc}"[:200]
                errors[key] = errors.get(key, 0) + 1
                counters[FAILED] += 1
                with contextlib.suppress(Exception):
                    await client.close()
                return
        clients.append(client)
        counters[OK] += 1

    await asyncio.gather(*(open_one(i) for i in range(job.count)))
    pipe.send(
        ("connected", len(clients), sum(errors.values()), errors, time.perf_counter() - start)
    )

    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command[0] == "heartbeat":
            pipe.send(("heartbeat", *await _heartbeats(clients, command[1], command[2])))
        elif command[0] == "close":
            # Bounded: whatever is still open when the worker exits is closed by the kernel.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(c.close() for c in clients), return_exceptions=True),
                    CLOSE_TIMEOUT_S,
                )
            pipe.send(("closed",))
            return


async def _heartbeats(
    clients: list[Client], connections: int, seconds: float
) -> tuple[int, int, float, list[float]]:
    """`connections` clients heartbeat back to back for `seconds`.

    Returns (answered, failed, elapsed seconds until the last answer, sampled round trips).
    """
    chosen = clients[:connections]
    answered = failed = 0
    rtts: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def loop(client: Client) -> None:
        nonlocal answered, failed
        while time.perf_counter() < deadline:
            try:
                rtt = await client.heartbeat(timeout=10.0)
            except Exception:
                failed += 1
                return
            answered += 1
            # Reservoir sampling keeps the sample uniform over the whole phase.
            if len(rtts) < RTT_SAMPLE:
                rtts.append(rtt)
            else:
                j = random.randrange(answered)
                if j < RTT_SAMPLE:
                    rtts[j] = rtt

    await asyncio.gather(*(loop(c) for c in chosen))
    return answered, failed, time.perf_counter() - start, rtts
