"""The CoffeeBus processes a focused benchmark starts (`bench.conn_bench`,
`bench.room_bench`): spawn one with its output to a log file, show the logs' ends when one
fails, and stop everything on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import IO

import pymongo
import pymongo.errors

from bus.admin import forget, groups_and_gates
from bus.topology import load_topology
from coffeebus.settings import load_settings
from store.redis.client import connect_redis

#: How long a process or worker may take to stop before it is killed.
STOP_TIMEOUT_S = 60.0


def spawn(
    argv: list[str], env: dict[str, str], logs: list[IO[bytes]], name: str
) -> subprocess.Popen[bytes]:
    """``python -m coffeebus <argv>`` with `env`, its output to a new log file (kept in
    `logs`). A session of its own: Ctrl-C in the terminal reaches the benchmark, which stops
    the process itself (`terminate`) instead of racing it."""
    log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
    logs.append(log)
    return subprocess.Popen(
        [sys.executable, "-m", "coffeebus", *argv],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def tail(logs: Iterable[IO[bytes]], lines: int = 30) -> str:
    """The last `lines` of every log, each under its file name."""
    out = []
    for log in logs:
        log.flush()
        text = Path(log.name).read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(out)


def stop_workers(pipes: Iterable[Connection], workers: Iterable[SpawnProcess]) -> None:
    """Ask every load worker to close its clients, then wait for it (kill it if it hangs)."""
    for pipe in pipes:
        with contextlib.suppress(OSError, ValueError):
            pipe.send(("close",))
    for worker in workers:
        worker.join(STOP_TIMEOUT_S)
        if worker.is_alive():
            worker.kill()
            worker.join()


def terminate(procs: Iterable[subprocess.Popen[bytes] | None]) -> None:
    """SIGTERM every process still running (a gate drains: KickNotify, close, routes
    removed), SIGKILL after `STOP_TIMEOUT_S`."""
    for proc in procs:
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def remove_logs(logs: Iterable[IO[bytes]]) -> None:
    for log in logs:
        log.close()
        Path(log.name).unlink(missing_ok=True)


def drop_database(name: str) -> None:
    """Drop the run's database; if that fails, the run's result stands: say what is left."""
    settings = load_settings()
    try:
        with pymongo.MongoClient(settings.mongo.url, serverSelectionTimeoutMS=10_000) as mongo:
            mongo.drop_database(name)
    except pymongo.errors.PyMongoError as exc:
        print(f"could not drop database {name}: {exc}", file=sys.stderr)


async def drop_keys(url: str, prefix: str) -> int:
    """Remove a run's Redis keys (those starting with `prefix`); how many there were.

    A c2c ramp leaves ~60,000 (dedupe keys live a day, hot timelines a week): left in place,
    they made every later SCAN-based clean-up on the server slower."""
    redis = connect_redis(url)
    removed = 0
    try:
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=f"{prefix}*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                removed += await redis.unlink(*batch)
                batch = []
        if batch:
            removed += await redis.unlink(*batch)
    finally:
        await redis.aclose()
    return removed


def end_run(database: str, fragment: str) -> None:
    """Remove what a focused run on the real services leaves once its processes are gone:
    its Mongo database `database`, its Redis keys (prefix ``<database>:``), and the consumer
    groups and gate topics whose names hold `fragment` (the run's suffix or gate id), which
    Kafka would keep for good (`bus.admin.forget`). If a part fails, the run's result stands:
    say what is left."""
    drop_database(database)
    settings = load_settings()
    bootstrap = settings.kafka.bootstrap_servers

    async def the_rest() -> None:
        await drop_keys(settings.redis.url, f"{database}:")
        groups, gates = await groups_and_gates(load_topology(), bootstrap)
        await forget(
            bootstrap,
            groups=[g for g in groups if fragment in g],
            topics=[t for t in gates if fragment in t],
        )

    try:
        asyncio.run(the_rest())
    except Exception as exc:
        print(f"could not remove the keys and groups of {database}: {exc!r}", file=sys.stderr)
