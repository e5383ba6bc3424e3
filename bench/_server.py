"""The system under test for `make bench`, in a process of its own.

One process runs a gate and one member each of the consumer groups the scenarios exercise
(msg, fanout, ack, query) on the embedded wiring or on the real services, exactly as
`bench.msg_bench` wires them in-process. The load generators are other processes: they
reach the gate over loopback TCP like any client. On the real services the projection group
runs in a process of its own too, as it is deployed (`bench._projection`). The benchmark's
driver talks to this process over a multiprocessing pipe to prepare data that clients
cannot create (users with tokens, groups beyond the client's own limits) and to ask when an
inbox is complete; each request is a tuple ``(command, *args)`` answered by one value (or
``("error", text)``). Every message of every scenario is sent by SDK clients through the
gate.

On the real services the run uses its own Mongo database, Redis key prefix and consumer
group ids (the Kafka topics are the shared ones of topology.yaml); the database is removed
afterwards (`run_settings` names them all).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

import msgspec
from prometheus_client.registry import REGISTRY
from pymongo import monitoring

from bench.stats import latency_ms
from bus.admin import apply
from bus.topology import Topology, load_topology
from coffeebus.roles import tune_process
from coffeebus.settings import GatewaySettings, Settings, load_settings
from coffeebus.wiring import Mode, Runtime, open_runtime
from consumers.registry import factory
from gateway.server import Gate
from schemas.ids import UserId
from store.groups import GroupSpec
from store.mongo.client import connect_mongo
from store.users import UserImport
from tests.consumers.conftest import commit_ends, unique_groups

log = logging.getLogger(__name__)

#: The consumer groups the scenarios need: send (msg), deliver (fanout), receipts (ack),
#: pull (query).
GROUPS = ("msg", "fanout", "ack", "query")
#: Bench users get ids above 2**40, far from the demo users and the tests' ids.
USER_ID_BASE = 1 << 40
#: Users created per bulk insert (`UserStore.create_many`).
USER_BATCH = 1000


def token(user_id: int) -> str:
    """The login token the benchmark gives `user_id`."""
    return f"bench-{user_id}"


def new_suffix() -> str:
    """What a run's Mongo database, Redis key prefix and consumer group ids end in."""
    return uuid.uuid4().hex[:10]


def gate_id(suffix: str) -> str:
    """The gate id of the run whose names end in `suffix` (its topic is ``im.gate.<id>``)."""
    return f"bench-{suffix}"


def database_name(suffix: str) -> str:
    """The Mongo database of the run whose names end in `suffix` (see `system`)."""
    return f"cbbench_{suffix}"


def run_settings(
    services: str, suffix: str, *, group_max_members: int = 200
) -> tuple[Settings, Mode, Topology]:
    """The settings, mode and topology of a run's processes on `services`.

    The settings are the environment's (`load_settings`: ``MONGO_URL``,
    ``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL``, ``COFFEEBUS_*``), with the run's own names:
    on the real services the Mongo database `database_name(suffix)`, the Redis key prefix
    ``cbbench:<suffix>:`` and consumer group ids ending in ``.bench<suffix>``.
    """
    topology = unique_groups(load_topology(), f"bench{suffix}")
    base = load_settings()
    messaging = msgspec.structs.replace(base.messaging, group_max_members=group_max_members)
    settings = msgspec.structs.replace(base, messaging=messaging)
    if services != "real":
        return settings, Mode.EMBEDDED, topology
    settings = msgspec.structs.replace(
        settings,
        mongo=msgspec.structs.replace(base.mongo, database=database_name(suffix)),
        redis=msgspec.structs.replace(base.redis, key_prefix=f"cbbench:{suffix}:"),
    )
    return settings, Mode.REAL, topology


async def start_at_ends(settings: Settings, topology: Topology, groups: Sequence[str]) -> None:
    """Apply the topology, and commit the end of the shared topics for `groups`: other
    runs' records are not theirs to handle."""
    await apply(topology, settings.kafka.bootstrap_servers)
    await commit_ends(
        settings.kafka.bootstrap_servers,
        topology,
        [(topology.group(g).group_id, topology.group(g).topics) for g in groups],
    )


@contextlib.asynccontextmanager
async def system(
    services: str,
    *,
    suffix: str | None = None,
    group_max_members: int = 200,
    groups: Sequence[str] = GROUPS,
) -> AsyncIterator[tuple[Runtime, Gate]]:
    """A runtime, a member of each of `groups` and a gate on an ephemeral port.

    `suffix` (default: `new_suffix()`) names the run's database, key prefix and group ids
    (`run_settings`).
    """
    suffix = suffix or new_suffix()
    settings, mode, topology = run_settings(services, suffix, group_max_members=group_max_members)
    if mode is Mode.REAL:
        await start_at_ends(settings, topology, groups)
    async with open_runtime(settings, mode, client_id="bench", topology=topology) as rt:
        consumers = []
        gate = Gate(
            msgspec.convert(
                {
                    "gate_id": gate_id(suffix),
                    "host": "127.0.0.1",
                    "tcp_port": 0,
                    "ws_port": 0,
                    # The load is the point: the per-connection rate limit would cap it.
                    "rate_limit_per_s": 1e6,
                    "rate_limit_burst": 1_000_000,
                    "heartbeat_interval_s": 3600,
                },
                GatewaySettings,
            ),
            bus=rt.bus,
            user_store=rt.users,
            route_store=rt.routes,
            topology=rt.topology,
        )
        try:
            for name in groups:
                handler = factory(name)(rt)
                spec = rt.topology.group(name)
                consumer = rt.bus.consumer(
                    spec.group_id, spec.topics, handler.handle, listener=handler
                )
                await consumer.start()
                consumers.append(consumer)
            await gate.start()
            yield rt, gate
        finally:
            await gate.stop()
            for consumer in consumers:
                await consumer.stop()
            if mode is Mode.REAL:
                await drop_database(settings.mongo.url, settings.mongo.database)


async def drop_database(url: str, name: str) -> None:
    """Remove a run's Mongo database (also the driver's clean-up of a killed server)."""
    mongo = connect_mongo(url, socket_timeout=60)
    try:
        await mongo.drop_database(name)
    finally:
        await mongo.close()


def handler_totals() -> dict[str, tuple[float, float, float]]:
    """Per consumer group (its name in topology.yaml): handler calls, their seconds and the
    records they handled, from the runner's Prometheus metrics (`telemetry.metrics`)."""
    totals: dict[str, list[float]] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            group = sample.labels.get("group")
            if group is None:
                continue
            # Bench group ids are "<declared id>.bench<suffix>"; "coffeebus.msg" -> "msg".
            name = group.split(".bench")[0].removeprefix("coffeebus.")
            entry = totals.setdefault(name, [0.0, 0.0, 0.0])
            if sample.name == "coffeebus_handler_seconds_count":
                entry[0] += sample.value
            elif sample.name == "coffeebus_handler_seconds_sum":
                entry[1] += sample.value
            elif sample.name == "coffeebus_records_consumed_total":
                entry[2] += sample.value
    return {name: (e[0], e[1], e[2]) for name, e in totals.items()}


class MongoCommands(monitoring.CommandListener):
    """How many commands of each name this process's Mongo clients sent, and how long
    each took (server round trip as PyMongo measures it), since the last `take`."""

    def __init__(self) -> None:
        self._ms: defaultdict[str, list[float]] = defaultdict(list)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._ms[event.command_name].append(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._ms[f"{event.command_name} (failed)"].append(event.duration_micros / 1e6)

    def take(self) -> dict[str, dict[str, Any]]:
        taken, self._ms = self._ms, defaultdict(list)
        return {
            name: {"count": len(times), "ms": latency_ms(times), "total_s": round(sum(times), 3)}
            for name, times in sorted(taken.items())
        }


#: Registered before any client exists (PyMongo copies the global listeners at creation).
MONGO_COMMANDS = MongoCommands()


class Monitor:
    """Event-loop stalls and garbage-collector pauses of this process, since the last take.

    CPU: the process's CPU seconds (user + system), a figure that other load on the machine
    changes less than wall-clock rates do. Handlers: calls, records per call and time per
    call of each consumer group. Mongo: the commands sent and their round trips (real
    services). Loop lag: how late a 10 ms sleep wakes up (a handler or a
    collection holding the loop delays every connection's frames by as much). GC: the
    duration of every collection, by generation, from `gc.callbacks`.
    """

    TICK_S = 0.01

    def __init__(self) -> None:
        self._lags: list[float] = []
        self._gc_started = 0.0
        self._gc: list[list[float]] = [[], [], []]
        self._task: asyncio.Task[None] | None = None
        self._cpu = time.process_time()
        self._handlers = handler_totals()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc[info["generation"]].append(time.perf_counter() - self._gc_started)

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.TICK_S)
            self._lags.append(time.perf_counter() - started - self.TICK_S)

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._tick(), name="bench-monitor")

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()

    def take(self) -> dict[str, Any]:
        lags, self._lags = self._lags, []
        pauses, self._gc = self._gc, [[], [], []]
        cpu, self._cpu = time.process_time() - self._cpu, time.process_time()
        now = handler_totals()
        before, self._handlers = self._handlers, now
        batches = {}
        for group, (calls, seconds, records) in now.items():
            c0, s0, r0 = before.get(group, (0.0, 0.0, 0.0))
            if calls > c0:
                batches[group] = {
                    "calls": int(calls - c0),
                    "records_per_call": round((records - r0) / (calls - c0), 2),
                    "ms_per_call": round((seconds - s0) * 1000 / (calls - c0), 3),
                }
        return {
            "cpu_s": round(cpu, 3),
            "handlers": batches,
            "mongo": MONGO_COMMANDS.take(),
            "loop_lag_ms": latency_ms(lags),
            "gc_pause_ms": {
                f"gen{g}": {
                    "count": len(p),
                    "total": round(sum(p) * 1000, 1),
                    "max": round(max(p, default=0.0) * 1000, 1),
                }
                for g, p in enumerate(pauses)
            },
        }


class Commands:
    """What the driver may ask of the system under test."""

    def __init__(self, rt: Runtime, gate: Gate, monitor: Monitor) -> None:
        self.rt = rt
        self.gate = gate
        self._monitor = monitor
        self._next_user = USER_ID_BASE + int.from_bytes(os.urandom(4), "big") * 10_000

    async def monitor(self) -> dict[str, Any]:
        """Loop lag and GC pauses since the last call (`Monitor.take`)."""
        return self._monitor.take()

    async def users(self, count: int) -> list[int]:
        """`count` new users, each with the token `token(user_id)`, created in bulk (one
        upsert per user took FerretDB v1 ~90 ms: 2,000 users did not fit in 10 minutes)."""
        ids = list(range(self._next_user, self._next_user + count))
        self._next_user += count
        for first in range(0, count, USER_BATCH):
            chunk = ids[first : first + USER_BATCH]
            created = await self.rt.users.create_many(
                [UserImport(user_id=UserId(u), nick_name=f"b{u}", token=token(u)) for u in chunk]
            )
            if len(created) != len(chunk):
                raise RuntimeError(f"{len(chunk) - len(created)} of {len(chunk)} users existed")
        return ids

    async def group(self, owner: int, members: list[int], group_type: int) -> int:
        """A new group of `group_type` owned by `owner` with `members`."""
        created = await self.rt.groups.create(
            GroupSpec(name="bench", owner_id=UserId(owner), group_type=group_type),
            [UserId(m) for m in members],
            create_key=uuid.uuid4().hex,
        )
        return int(created.group.group_id)

    async def wait_inbox(self, users: list[int], count: int, limit_s: float) -> float | None:
        """The perf_counter time at which every one of `users` has `count` inbox entries
        (polled: a store has no event to await), or None after `limit_s` seconds."""
        pending = list(users)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                while pending:
                    heads = await asyncio.gather(*(self.rt.inbox.head(UserId(u)) for u in pending))
                    pending = [u for u, head in zip(pending, heads, strict=True) if head < count]
                    if pending:
                        await asyncio.sleep(0.005)
                return time.perf_counter()
        return None


async def _serve(conn: Connection, services: str, suffix: str, group_max_members: int) -> None:
    async with system(services, suffix=suffix, group_max_members=group_max_members) as (rt, gate):
        # As `coffeebus.roles.serve` does once its roles run (``[process]`` settings).
        tune_process(rt.settings.process)
        monitor = Monitor()
        monitor.start()
        commands = Commands(rt, gate, monitor)
        conn.send((0, ("ready", gate.tcp_port)))
        while True:
            request = await asyncio.to_thread(conn.recv)
            request_id, name, args = request[0], request[1], request[2:]
            if name == "stop":
                stop_id = request_id
                break
            try:
                conn.send((request_id, await getattr(commands, name)(*args)))
            except Exception as exc:  # the driver reports it and stops the run
                log.exception("bench server: %s failed", name)
                conn.send((request_id, ("error", f"{name}: {exc!r}")))
        monitor.stop()
    conn.send((stop_id, ("stopped",)))


def serve(conn: Connection, services: str, suffix: str, group_max_members: int) -> None:
    """Process entry point: run the system until the driver sends ``("stop",)``."""
    monitoring.register(MONGO_COMMANDS)
    import uvloop  # noqa: PLC0415 - the gate's production loop

    logging.basicConfig(level=logging.WARNING)
    uvloop.run(_serve(conn, services, suffix, group_max_members))
