"""The processes of one `make bench` scenario: the system under test and its load workers.

`Rig` starts `bench._server` (gate + consumers) in one process, on the real services the
projection group in another (`bench._projection`, as it is deployed), and `workers` load
processes (`bench._load`); it talks to each over a pipe, and stops them all on any exit.
Processes are spawned, not forked: each gets a fresh interpreter and event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from types import TracebackType
from typing import Any, Self

from bench._load import work
from bench._procs import drop_keys
from bench._projection import project
from bench._server import (
    drop_database,
    gate_id,
    new_suffix,
    run_settings,
    serve,
)
from bus.admin import forget
from bus.topology import Topology
from coffeebus.settings import Settings
from gateway.server import gate_group_id

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
#: How long a thread waiting on a pipe blocks before looking at its deadline again.
POLL_SLICE_S = 0.5
#: `Rig.quiet`: the system under test is idle when it used less CPU than this (seconds, all
#: its processes together) over a window of `QUIET_WINDOW_S`.
QUIET_CPU_S = 0.3
QUIET_WINDOW_S = 1.0
#: Loopback source addresses the workers' connections are spread over (each address has
#: ~28,000 ephemeral ports toward one gate port).
SOURCES = tuple(f"127.0.0.{n}" for n in range(2, 10))


class BenchError(RuntimeError):
    """A process of the benchmark failed or did not answer in time."""


_request_ids = itertools.count(1)


async def ask(conn: Connection, request: tuple[Any, ...], wait_s: float) -> Any:
    """Send `request` on `conn` and wait up to `wait_s` seconds for its answer.

    Requests carry an id that the answer echoes: the late answer of a request that timed
    out is dropped instead of being taken for the next request's."""
    request_id = next(_request_ids)
    conn.send((request_id, *request))
    return await answer(conn, wait_s, str(request[0]), request_id)


async def answer(conn: Connection, wait_s: float, what: str, request_id: int = 0) -> Any:
    """The value answering `request_id` on `conn` (0: an unsolicited message such as
    "ready"), waited for in a thread (a pipe has no asyncio reader).

    The thread polls in slices of `POLL_SLICE_S`: a cancelled wait (a scenario's deadline)
    leaves no thread blocked behind it for the rest of `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"{what}: no answer in {wait_s:g} s")
        if not await asyncio.to_thread(conn.poll, min(left, POLL_SLICE_S)):
            continue
        answered, value = conn.recv()
        if answered != request_id:
            continue  # the late answer of a request that timed out
        if isinstance(value, tuple) and value and value[0] == "error":
            raise BenchError(str(value[1]))
        return value


class Rig:
    """A running system under test on `services` and its load workers."""

    def __init__(self, services: str, *, workers: int, group_max_members: int = 200) -> None:
        self.services = services
        self.n_workers = workers
        self.group_max_members = group_max_members
        self.port = 0
        #: Names the server's Mongo database, Redis key prefix and consumer group ids.
        self.suffix = new_suffix()
        settings, _, topology = run_settings(services, self.suffix)
        #: The run's settings (its database, key prefix, servers), as the server has them.
        self.settings: Settings = settings
        #: The run's topology (its consumer group ids), for `bus.admin.lag`.
        self.topology: Topology = topology
        self.bootstrap = settings.kafka.bootstrap_servers
        self._server: tuple[SpawnProcess, Connection] | None = None
        self._projection: tuple[SpawnProcess, Connection] | None = None
        self._workers: list[tuple[SpawnProcess, Connection]] = []

    @property
    def has_projection(self) -> bool:
        """Whether a projection process runs (the real services only)."""
        return self._projection is not None

    async def __aenter__(self) -> Self:
        ctx = multiprocessing.get_context("spawn")
        try:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=serve,
                args=(theirs, self.services, self.suffix, self.group_max_members),
                name=f"bench-server-{self.services}",
            )
            proc.start()
            theirs.close()
            self._server = (proc, mine)
            ready = await answer(mine, START_TIMEOUT_S, "server start")
            self.port = int(ready[1])
            if self.services == "real":
                # After the server: it applied the topology and created the database's
                # indexes; before any message: the projection starts at the logs' ends.
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=project, args=(theirs, self.suffix), name="bench-projection"
                )
                proc.start()
                theirs.close()
                self._projection = (proc, mine)
                await answer(mine, START_TIMEOUT_S, "projection start")
            for index in range(self.n_workers):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=work, args=(theirs, self.port, SOURCES), name=f"bench-load-{index}"
                )
                proc.start()
                theirs.close()
                self._workers.append((proc, mine))
            for _, conn in self._workers:
                await answer(conn, START_TIMEOUT_S, "worker start")
        except BaseException:
            await self.close(abort=True)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(abort=exc is not None)

    async def server(self, *request: Any, wait_s: float = 600.0) -> Any:
        """Ask the system under test (see `bench._server.Commands`)."""
        assert self._server is not None
        return await ask(self._server[1], request, wait_s)

    async def projection(self, *request: Any, wait_s: float = 60.0) -> Any:
        """Ask the projection process (see `bench._projection`); real services only."""
        assert self._projection is not None, "no projection process on the embedded wiring"
        return await ask(self._projection[1], request, wait_s)

    async def worker(self, index: int, *request: Any, wait_s: float = 600.0) -> Any:
        """Ask load worker `index` (see `bench._load`)."""
        return await ask(self._workers[index][1], request, wait_s)

    async def each(self, requests: list[tuple[Any, ...]], *, wait_s: float = 600.0) -> list[Any]:
        """Ask worker i `requests[i]`, all at once."""
        return list(
            await asyncio.gather(
                *(self.worker(i, *r, wait_s=wait_s) for i, r in enumerate(requests))
            )
        )

    async def quiet(self, limit_s: float) -> dict[str, float]:
        """Wait, up to `limit_s`, until the system under test is idle: less than
        `QUIET_CPU_S` of CPU over a `QUIET_WINDOW_S` window, all parts together. What one
        scenario leaves behind (the document store vacuuming after the c2c ramp's writes,
        the broker cleaning its logs) would otherwise take the next one's CPU. Returns how
        long it waited and the CPU of the last window."""
        started = time.perf_counter()
        while True:
            before = self.cpu_seconds()
            await asyncio.sleep(QUIET_WINDOW_S)
            used = sum(cpu_spent(before, self.cpu_seconds()).values())
            waited = time.perf_counter() - started
            if used < QUIET_CPU_S or waited >= limit_s:
                return {"waited_s": round(waited, 1), "window_cpu_s": round(used, 3)}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each part of the system under test:
        the server, the projection and the load workers of this rig, and the services'
        processes on this machine (`SERVICE_PROCESSES`). The difference of two readings is
        where the machine's CPU went in between, whatever else runs beside the bench."""
        parts: dict[str, float] = {}
        mine = {
            "server": [held[0] for held in (self._server,) if held is not None],
            "projection": [held[0] for held in (self._projection,) if held is not None],
            "load": [proc for proc, _ in self._workers],
        }
        for part, procs in mine.items():
            parts[part] = sum(cpu_of(proc.pid) for proc in procs if proc.pid is not None)
        for part, pids in service_pids().items():
            parts[part] = sum(cpu_of(pid) for pid in pids)
        return parts

    async def close(self, *, abort: bool = False) -> None:
        """Close the workers' clients, stop the server; kill what does not exit in time.

        With `abort` (after a scenario failed or ran out of time: the server may still be
        busy with a request it will not finish soon), kill every process at once and remove
        what the server would have removed on its way out."""
        procs = [p for p, _ in self._workers]
        procs += [held[0] for held in (self._projection, self._server) if held is not None]
        if abort:
            for proc in procs:
                proc.kill()
        else:
            await self._stop_gently()
        for proc in procs:
            await asyncio.to_thread(proc.join, STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join)
        if self._server is not None and self.services == "real":
            settings = self.settings
            if abort:
                await drop_database(settings.mongo.url, settings.mongo.database)
            await drop_keys(settings.redis.url, settings.redis.key_prefix)
            # The run's consumer groups and gate topic: Kafka would keep them for good.
            gate_topic = self.topology.gate_topic(gate_id(self.suffix)).name
            await forget(
                self.bootstrap,
                groups=[
                    *(spec.group_id for spec in self.topology.groups.values()),
                    gate_group_id(gate_topic),
                ],
                topics=[gate_topic],
            )
        self._workers.clear()
        self._server = self._projection = None

    async def _stop_gently(self) -> None:
        for proc, conn in self._workers:
            if proc.is_alive():
                try:
                    await ask(conn, ("close",), STOP_TIMEOUT_S)
                except (BenchError, OSError, EOFError):
                    proc.kill()
        # The projection before the server: the server drops the run's database on its way
        # out, and a projection still writing would create it again.
        for held in (self._projection, self._server):
            if held is not None and held[0].is_alive():
                proc, conn = held
                try:
                    await ask(conn, ("stop",), STOP_TIMEOUT_S)
                except (BenchError, OSError, EOFError):
                    proc.kill()
                await asyncio.to_thread(proc.join, STOP_TIMEOUT_S)
                if proc.is_alive():
                    proc.kill()


#: The shared services' processes, by what their command lines contain (services/services.sh
#: starts them from its cache; PostgreSQL's backends name their cluster in their title).
SERVICE_PROCESSES: dict[str, tuple[str, ...]] = {
    "kafka": ("java", "/.cache/coffeebus/run/kafka/"),
    "redis": ("redis-server", ":6379"),
    "ferretdb": ("ferretdb", "--handler"),
    "postgres": ("postgres", "coffeebus"),
}
_TICKS = os.sysconf("SC_CLK_TCK")


def service_pids() -> dict[str, list[int]]:
    """The processes of each service of `SERVICE_PROCESSES` running on this machine."""
    found: dict[str, list[int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for part, marks in SERVICE_PROCESSES.items():
            if all(mark in cmdline for mark in marks):
                found.setdefault(part, []).append(int(pid))
                break
    return found


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and its threads, and of its children
    that ended and were waited for — PostgreSQL's backends come and go with its clients'
    connections, and without theirs the service's total fell when one ended; 0 once the
    process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(field) for field in fields[11:15]) / _TICKS


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per part, the CPU seconds between two `Rig.cpu_seconds` readings, most first."""
    spent = {part: round(after[part] - before.get(part, 0.0), 3) for part in after}
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """`items` dealt round-robin into `parts` lists."""
    return [items[i::parts] for i in range(parts)]
