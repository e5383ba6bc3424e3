"""The projection group of a `make bench` run on the real services, in a process of its own.

In production the ``projection`` group runs as its own role (`coffeebus consume
projection`), so the benchmark runs it beside the system under test (`bench._server`), not
inside it: what it costs in CPU and event-loop time does not slow the gate and the message
path, as it would not in production. It uses the run's names (`bench._server.run_settings`:
the same Mongo database, Redis key prefix and unique consumer group ids) and starts at the
end of the log topics like the server's groups do.

The driver asks it over a pipe, like the server (``(command, *args)`` answered by one
value): ``("stats",)`` gives what the member wrote so far (`ProjectionHandler.stats`), its
CPU seconds, the lag it knows of its owned partitions (`KafkaConsumer.lag`) and the time
(``perf_counter``, one clock for every process); ``("stop",)`` stops it. The lag the
benchmark reports comes from the cluster (`bus.admin.lag`, `bench.projection`): the
in-process figure is from the last fetch, which a backlog of prefetched records makes stale.

It runs at `NICE` (``[process] nice``), as docs/operations.md advises for a projection
that shares a host with the message path: its batches come in bursts, and at the same
priority they took the CPU the message path's tail latency needs.

The embedded runs have no projection process: in memory the timeline stores are the
document store already.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from bench._server import run_settings, start_at_ends
from bus.kafka import KafkaConsumer
from coffeebus.roles import ConsumerRole, tune_process
from coffeebus.wiring import Mode, open_runtime
from consumers.projection import ProjectionHandler

log = logging.getLogger(__name__)

GROUP = "projection"
#: ``[process] nice`` of the projection process (module docstring).
NICE = 10


def stats(role: ConsumerRole) -> dict[str, Any]:
    """What the member wrote so far, its CPU seconds and in-process lag, and the time."""
    handler = role.handler
    assert isinstance(handler, ProjectionHandler)
    consumer = role.consumer
    lag = sum(consumer.lag().values()) if isinstance(consumer, KafkaConsumer) else None
    return {
        **dataclasses.asdict(handler.stats),
        "lag": lag,
        "cpu_s": time.process_time(),
        "at": time.perf_counter(),
    }


async def _project(conn: Connection, suffix: str) -> None:
    settings, mode, topology = run_settings("real", suffix)
    settings = msgspec.structs.replace(
        settings, process=msgspec.structs.replace(settings.process, nice=NICE)
    )
    assert mode is Mode.REAL
    await start_at_ends(settings, topology, [GROUP])
    async with open_runtime(settings, mode, client_id="bench-projection", topology=topology) as rt:
        role = ConsumerRole(rt, GROUP)
        await role.start()
        tune_process(rt.settings.process)  # as `coffeebus.roles.serve` does
        stop_id = 0
        try:
            conn.send((0, ("ready",)))
            while True:
                request = await asyncio.to_thread(conn.recv)
                request_id, name = request[0], request[1]
                if name == "stop":
                    stop_id = request_id
                    break
                if name == "stats":
                    conn.send((request_id, stats(role)))
                else:
                    conn.send((request_id, ("error", f"unknown request {name!r}")))
        finally:
            await role.stop()
    conn.send((stop_id, ("stopped",)))


def project(conn: Connection, suffix: str) -> None:
    """Process entry point: run the projection until the driver sends ``("stop",)``."""
    import uvloop  # noqa: PLC0415 - the loop the server and the load use

    logging.basicConfig(level=logging.WARNING)
    uvloop.run(_project(conn, suffix))
