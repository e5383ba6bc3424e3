"""Private Kafka, Redis and FerretDB instances that a fault test may stop, kill and restart.

The shared services (Kafka 9092, Redis 6379, FerretDB 27017 on PostgreSQL 5433) carry every
other test of the team and must never be touched, so a test that breaks a service starts its
own copy through ``services/services.sh`` — the script that starts the shared ones, so both run
the same configuration — with:

- a temporary ``COFFEEBUS_HOME`` (own run state, pid files, logs and lock) whose ``kafka/``
  and ``ferretdb/`` entries link to the shared cache, so the Kafka jars and the FerretDB
  binary are reused, never fetched or built again;
- for FerretDB, a PostgreSQL cluster of its own in that home (Debian's binaries, installed
  once per machine; ``initdb`` adds about a second to the first start);
- free loopback ports (``COFFEEBUS_*_PORT``), ``COFFEEBUS_KAFKA_NODES=3`` for a
  three-broker KRaft cluster (replication factor 3, ``min.insync.replicas`` 2), and
  ``COFFEEBUS_REDIS_NODES=6`` for a Redis Cluster of three masters with a replica each;
- ``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL`` and ``MONGO_URL`` removed from the script's
  environment (there they mean "use that server" and would point it at the shared ones).

Services are named ``kafka`` (one node), ``kafka-1`` … ``kafka-N`` (the nodes of a cluster),
``redis`` (one node), ``redis-1`` … ``redis-N`` (the nodes of a Redis Cluster: which are
masters changes with every failover, `redis_masters` says), ``postgres`` and ``ferretdb``
(a set with FerretDB has its PostgreSQL too). Every call is a coroutine that runs the script
as a subprocess, so a fault can be injected while the test's load keeps running on the same
event loop::

    async with private_services(tmp_path, kafka_nodes=3) as services:
        bootstrap = services.kafka_bootstrap
        await services.kill("kafka-2")        # SIGKILL, returns once the process is gone
        await services.start()                # starts whatever is down, waits until healthy

Redis runs without persistence (as the shared one): a restart loses every key. FerretDB (in
PostgreSQL) and Kafka keep their data across a restart. Stopping ``postgres`` is PostgreSQL's
fast shutdown (SIGINT): its smart one (SIGTERM) would wait for FerretDB's pooled connections.
`start` after ``postgres`` was stopped or killed restarts FerretDB as well (services.sh: its
pooled connections to the old server would fail their next command).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from redis.asyncio import Redis

from tests.waiting import wait_for

__all__ = ["PrivateServices", "ServiceError", "free_port", "private_services", "shared_cache"]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SERVICES_SH = REPO / "services" / "services.sh"
LOOPBACK = "127.0.0.1"
#: Seconds `services.sh up` may take: a three-node cluster needs ~40 s on the busy 2-core box.
UP_WITHIN_S = 150.0
#: Seconds a stopped or killed process may take to be gone (Kafka's controlled shutdown).
GONE_WITHIN_S = 60.0
# Ports are picked here, below Linux's ephemeral range (32768-60999), so an outgoing
# connection of another process cannot take one between the check and the bind.
_PORT_RANGE = (12000, 32000)
_EXTERNAL = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "MONGO_URL")
#: The signal of a clean stop, where it is not SIGTERM (PostgreSQL: fast shutdown).
_STOP_SIGNAL = {"postgres": signal.SIGINT}


class ServiceError(RuntimeError):
    """services.sh failed; the message carries its output."""


def shared_cache() -> Path:
    """Where services.sh caches downloads and builds (what `make services-up` filled)."""
    return Path(os.environ.get("COFFEEBUS_HOME") or Path.home() / ".cache" / "coffeebus")


def free_port(size: int = 1) -> int:
    """A port p such that p … p+size-1 are all free on loopback now."""
    for _ in range(200):
        base = random.randrange(*_PORT_RANGE)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind((LOOPBACK, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise ServiceError(f"no block of {size} free ports in {_PORT_RANGE}")


def _gone(pid: int) -> bool:
    """The process is gone, or a zombie whose every thread has exited: only then does it hold
    no ports any more. A killed multi-threaded process (a JVM) shows its first thread as a
    zombie while the others are still exiting, and its sockets close only when the last of
    them has: a restart that starts then found the old broker still on its port."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z" and threads <= 1


class PrivateServices:
    """Kafka (one node or a cluster), Redis and FerretDB of one test (module docstring).

    Args:
        root: a directory of the test's own (``tmp_path``); state goes under ``root/home``.
        kafka_nodes: 0 (no Kafka), 1 (a single node, named ``kafka``) or N (``kafka-1`` …).
        redis: run a Redis.
        redis_nodes: 0 (``redis`` decides), 1 (one Redis) or an even N >= 6: a Redis Cluster
            of N/2 masters with one replica each, named ``redis-1`` … ``redis-N``.
        ferretdb: run a FerretDB (MongoDB wire protocol) and the PostgreSQL it stores into.
    """

    def __init__(
        self,
        root: Path,
        *,
        kafka_nodes: int = 0,
        redis: bool = False,
        redis_nodes: int = 0,
        ferretdb: bool = False,
    ) -> None:
        if not 0 <= kafka_nodes <= 9:
            raise ValueError("kafka_nodes must be 0-9")
        if redis_nodes not in (0, 1) and not (6 <= redis_nodes <= 18 and redis_nodes % 2 == 0):
            raise ValueError("redis_nodes must be 0, 1 or an even 6-18")
        redis_nodes = redis_nodes or (1 if redis else 0)
        self.redis_nodes = redis_nodes
        self.home = root / "home"
        self.kafka_nodes = kafka_nodes
        self._kinds = [
            kind
            for kind, wanted in (
                ("kafka", kafka_nodes > 0),
                ("redis", redis_nodes > 0),
                ("postgres", ferretdb),
                ("ferretdb", ferretdb),
            )
            if wanted
        ]
        # Node i of Kafka listens on base + 2(i-1) and its controller on the port after it.
        self._kafka_port = free_port(2 * kafka_nodes) if kafka_nodes else 0
        # A cluster's node i serves on base + i-1 and talks to the others on base + N + i-1.
        self._redis_port = (
            free_port(redis_nodes if redis_nodes == 1 else 2 * redis_nodes) if redis_nodes else 0
        )
        self._ferretdb_port = free_port(1) if ferretdb else 0
        self._postgres_port = free_port(1) if ferretdb else 0

    # -- addresses ---------------------------------------------------------------------------

    def kafka_port(self, node: int = 1) -> int:
        """The broker port of Kafka node `node` (1-based)."""
        if not 1 <= node <= self.kafka_nodes:
            raise ValueError(f"no Kafka node {node} (there are {self.kafka_nodes})")
        return self._kafka_port + 2 * (node - 1)

    @property
    def kafka_bootstrap(self) -> str:
        """Every broker, so that clients survive the loss of any one of them."""
        return ",".join(f"{LOOPBACK}:{self.kafka_port(n)}" for n in range(1, self.kafka_nodes + 1))

    def redis_port(self, node: int = 1) -> int:
        """The port of Redis node `node` (1-based)."""
        if not 1 <= node <= self.redis_nodes:
            raise ValueError(f"no Redis node {node} (there are {self.redis_nodes})")
        return self._redis_port + node - 1

    @property
    def redis_url(self) -> str:
        """One Redis's URL, or a Redis Cluster's with two seeds (services/README.md)."""
        if not self._redis_port:
            raise ValueError("this set has no Redis")
        if self.redis_nodes == 1:
            return f"redis://{LOOPBACK}:{self._redis_port}/0"
        return f"redis+cluster://{LOOPBACK}:{self.redis_port(1)},{LOOPBACK}:{self.redis_port(2)}"

    async def redis_masters(self) -> dict[str, list[tuple[int, int]]]:
        """The running masters of a Redis Cluster by service name, each with its slot ranges,
        as a node that is up sees them (a killed master is gone from it at once)."""
        running = [n for n in range(1, self.redis_nodes + 1) if self.pid(f"redis-{n}")]
        if not running:
            raise ServiceError("no Redis Cluster node runs")
        client = Redis(host=LOOPBACK, port=self.redis_port(running[0]), decode_responses=True)
        try:
            # redis-py parses the reply: {"host:port": {"flags": "...", "slots": [[lo, hi]]}}
            nodes = await client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()
        by_port = {self.redis_port(n): f"redis-{n}" for n in running}
        masters: dict[str, list[tuple[int, int]]] = {}
        for address, node in dict(nodes).items():
            port = int(str(address).rpartition(":")[2])
            flags = str(node["flags"]).split(",")
            if "master" in flags and "fail" not in flags and port in by_port:
                slots = [(int(r[0]), int(r[-1])) for r in node["slots"]]
                masters[by_port[port]] = sorted(slots)
        return masters

    @property
    def mongo_url(self) -> str:
        if not self._ferretdb_port:
            raise ValueError("this set has no FerretDB")
        return f"mongodb://{LOOPBACK}:{self._ferretdb_port}"

    @property
    def names(self) -> list[str]:
        """Every service of the set, by the names `stop`, `kill` and `pid` take."""
        names: list[str] = []
        for kind in self._kinds:
            if kind == "kafka" and self.kafka_nodes > 1:
                names += [f"kafka-{n}" for n in range(1, self.kafka_nodes + 1)]
            elif kind == "redis" and self.redis_nodes > 1:
                names += [f"redis-{n}" for n in range(1, self.redis_nodes + 1)]
            else:
                names.append(kind)
        return names

    # -- control -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every service of the set that is not running and wait until all are healthy
        (the script leaves running ones alone: after a kill this restarts just that one)."""
        cache = shared_cache()
        self.home.mkdir(parents=True, exist_ok=True)
        for entry in ("kafka", "ferretdb"):
            link = self.home / entry
            if not link.exists():
                if not (cache / entry).is_dir():
                    raise ServiceError(
                        f"{cache / entry} is missing: run `make services-up` once to fill the "
                        "cache the private services reuse"
                    )
                link.symlink_to(cache / entry)
        await self._script("up", *self._kinds)

    async def stop(self, name: str) -> None:
        """A clean shutdown (SIGTERM; SIGINT for PostgreSQL) and wait until the process is gone."""
        await self._signal(name, _STOP_SIGNAL.get(name, signal.SIGTERM))

    async def kill(self, name: str) -> None:
        """SIGKILL (no shutdown at all) and wait until the process is gone."""
        await self._signal(name, signal.SIGKILL)

    async def restart(self, name: str, *, kill: bool = False) -> None:
        """Stop (or kill) `name`, then start it again and wait until it is healthy."""
        if kill:
            await self.kill(name)
        else:
            await self.stop(name)
        await self.start()

    def pid(self, name: str) -> int | None:
        """The pid of a running service, or None."""
        try:
            text = self._pidfile(name).read_text().strip()
        except FileNotFoundError:
            return None
        if not text.isdigit() or _gone(int(text)):
            return None
        return int(text)

    async def close(self) -> None:
        """Kill everything (the data is disposable) and delete the data, keeping the logs.

        PostgreSQL is stopped (fast shutdown), not killed: a killed postmaster leaves its SysV
        shared memory segment behind, and with the data directory deleted nothing reclaims it.
        """
        for name in reversed(self.names):  # FerretDB before its PostgreSQL
            if self.pid(name) is not None:
                await (self.stop(name) if name == "postgres" else self.kill(name))
        run = self.home / "run"
        for data in [*run.glob("kafka/node-*/data"), run / "postgres" / "data"]:
            shutil.rmtree(data, ignore_errors=True)

    # -- internals ---------------------------------------------------------------------------

    def _pidfile(self, name: str) -> Path:
        run = self.home / "run"
        if name == "redis":
            return run / "redis" / "redis.pid"
        if name.startswith("redis-"):
            if name not in self.names:
                raise ValueError(f"no service {name!r} here (have {self.names})")
            return run / "redis-cluster" / f"node-{name.removeprefix('redis-')}" / "redis.pid"
        if name == "ferretdb":
            return run / "ferretdb" / "ferretdb.pid"
        if name == "postgres":
            return run / "postgres" / "postgres.pid"
        node = 1 if name == "kafka" else int(name.removeprefix("kafka-"))
        if name not in self.names or not 1 <= node <= self.kafka_nodes:
            raise ValueError(f"no service {name!r} here (have {self.names})")
        return run / "kafka" / f"node-{node}" / "kafka.pid"

    async def _signal(self, name: str, sig: signal.Signals) -> None:
        pid = self.pid(name)
        if pid is None:
            raise ServiceError(f"{name} is not running")
        log.info("%s: %s to pid %d", name, sig.name, pid)
        os.kill(pid, sig)
        await wait_for(lambda: _gone(pid), within=GONE_WITHIN_S)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _EXTERNAL}
        env["COFFEEBUS_HOME"] = str(self.home)
        if self.kafka_nodes:
            env["COFFEEBUS_KAFKA_NODES"] = str(self.kafka_nodes)
            env["COFFEEBUS_KAFKA_PORT"] = str(self._kafka_port)
            env["COFFEEBUS_KAFKA_CONTROLLER_PORT"] = str(self._kafka_port + 1)
        if self._redis_port:
            env["COFFEEBUS_REDIS_PORT"] = str(self._redis_port)
            env["COFFEEBUS_REDIS_NODES"] = str(self.redis_nodes)
        if self._ferretdb_port:
            env["COFFEEBUS_FERRETDB_PORT"] = str(self._ferretdb_port)
            env["COFFEEBUS_POSTGRES_PORT"] = str(self._postgres_port)
        return env

    async def _script(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "bash",
            str(SERVICES_SH),
            *args,
            env=self._env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(UP_WITHIN_S):
                out, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise ServiceError(
                f"services.sh {' '.join(args)}: no answer in {UP_WITHIN_S}s"
            ) from None
        text = out.decode(errors="replace")
        if process.returncode != 0:
            raise ServiceError(f"services.sh {' '.join(args)} failed:\n{text}")
        log.info("services.sh %s:\n%s", " ".join(args), text.rstrip())
        return text


@contextlib.asynccontextmanager
async def private_services(
    root: Path,
    *,
    kafka_nodes: int = 0,
    redis: bool = False,
    redis_nodes: int = 0,
    ferretdb: bool = False,
) -> AsyncIterator[PrivateServices]:
    """Start a `PrivateServices` set, yield it healthy, and kill it on exit."""
    services = PrivateServices(
        root, kafka_nodes=kafka_nodes, redis=redis, redis_nodes=redis_nodes, ferretdb=ferretdb
    )
    try:
        await services.start()
        yield services
    finally:
        await services.close()
