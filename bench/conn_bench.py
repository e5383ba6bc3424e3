"""Connection benchmark: idle connections one gate process holds, its memory per connection,
and heartbeat round trips per second.

    uv run python -m bench.conn_bench --connections 50000 [--transport tcp|ws]
        [--services embedded|real] [--processes 2]

What it does, in order:

1. Raises its own RLIMIT_NOFILE soft limit to the hard limit; every process it starts
   inherits it. The hard limit caps what one gate can hold: a target above it (minus
   `FD_RESERVE` for the gate's own files) is clamped, and the result says so, unless
   ``--no-clamp`` asks to see what happens past it.
2. Starts the gate as a separate process: ``coffeebus run --services embedded --no-demo``
   (gate + HTTP API + consumers, in-memory stores), or with ``--services real`` the two
   processes ``coffeebus gateway`` and ``coffeebus api`` on Kafka/FerretDB/Redis
   (`bash services/services.sh up`). The gate's heartbeat interval is set to an hour for
   the run, so its idle timeout (3 intervals) closes nothing while the clients sit idle.
3. Imports one user per connection: one route per (user, client type) and a new login kicks
   the older one of its type, so connections need distinct users. Embedded, through the
   HTTP API (``PUT /v1/users/{id}``, many in flight, a 503 retried after its Retry-After);
   on the real services straight into the run's own database in bulk
   (`UserStore.create_many`), which is dropped at the end. Done before the baseline, so the
   users' memory (in the embedded store) is not counted as the connections'.
4. Reads the gate's VmRSS (``/proc/<pid>/status``) once it settles, then opens the
   connections from `--processes` worker processes (`bench._conn_load`), each connection
   bound to one of several 127.0.0.x source addresses and logged in by token; the SDK
   clients run no heartbeat task and no reconnect. A progress line shows the count; the
   phase aborts after ``--connect-limit`` seconds.
5. Once the RSS settles again: memory per connection = (RSS after - RSS before) /
   connections held; held = established sockets on the gate's port (``ss``), cross-checked
   with the clients' count and the live-gate registry (``GET /v1/gates``).
6. ``--heartbeat-conns`` of the connections send heartbeats back to back for
   ``--heartbeat-seconds``: round trips per second, their latency, and the gate's CPU time
   over the phase (round trips per gate CPU second is the gate's figure; the round trips
   per second are bounded by the load generator on a small machine).
7. Closes everything (also on Ctrl-C or an error) and writes
   bench/results/connections.json (one entry per services/transport/connections).

RSS counts the gate's user-space memory only: the kernel's socket buffers are not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path
from typing import IO, Any

import httpx
import rich.console
import rich.progress

from bench._conn_load import FAILED, OK, Job, raise_nofile, run_worker, token_for
from bench._procs import end_run, remove_logs, spawn, stop_workers, tail, terminate
from coffeebus.settings import load_settings
from store.ids import UserId
from store.mongo.client import connect_mongo, database, ensure_indexes
from store.mongo.users import MongoUserStore
from store.redis.client import connect_redis
from store.redis.keys import RedisKeys
from store.users import UserImport

RESULTS = Path(__file__).parent / "results" / "connections.json"
#: File descriptors a gate keeps for itself (listeners, epoll, logs, API, bus clients).
FD_RESERVE = 200
#: Connections per loopback source address (one address has ~28k ephemeral ports).
CONNS_PER_SOURCE = 20_000
#: The gate's heartbeat interval during the run: its idle timeout is 3 of these.
GATE_HEARTBEAT_S = 3600
#: Users start here, far from the demo users and from ids other tests use.
FIRST_USER = 70_000_000
#: The gate's id (its topic and consumer group go when the run ends, `end_run`).
GATE_ID = "bench-conn"
START_TIMEOUT_S = 60.0
REGISTRY_WAIT_S = 25.0
#: How long after the heartbeat phase's end the load workers may take to report it.
HEARTBEAT_GRACE_S = 60.0
#: How long one user's import is retried while the API answers 503.
IMPORT_RETRY_S = 60.0
#: Users created per bulk insert on the real services.
USER_BATCH = 1000
STOP_TIMEOUT_S = 60.0


@dataclass
class Procs:
    """Every process the benchmark started, for clean-up on any exit."""

    #: The real-services run's own Mongo database and Redis key prefix (dropped at the end).
    database: str = field(default_factory=lambda: f"cbbench_conn_{uuid.uuid4().hex[:10]}")
    gate: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    workers: list[SpawnProcess] = field(default_factory=list)
    pipes: list[Connection] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)


# --- machine and process probes -----------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU, cores, memory, Python, kernel and the limits that matter for connections."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    low, high = _read_sys("net/ipv4/ip_local_port_range").split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "nofile_hard_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "somaxconn": int(_read_sys("net/core/somaxconn")),
        "ephemeral_ports": int(high) - int(low) + 1,
    }


def _read_sys(name: str) -> str:
    return Path("/proc/sys", name).read_text().strip()


def rss_kb(pid: int) -> int:
    """VmRSS of `pid` in KiB."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return int(match.group(1))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nofile_limit(pid: int) -> int:
    """The soft RLIMIT_NOFILE of `pid` (what it can really open)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError(f"no open-files limit for pid {pid}")


def established(port: int) -> int:
    """Established TCP sockets whose local port is `port` (the gate's side)."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip())


async def settled_rss(pid: int, *, tolerance: float = 0.005, limit_s: float = 15.0) -> int:
    """RSS once two readings a second apart differ by less than `tolerance`."""
    previous = rss_kb(pid)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        current = rss_kb(pid)
        if abs(current - previous) <= tolerance * previous:
            return current
        previous = current
    return previous


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Progress:
    """A progress bar on stderr (rich) for one phase of the run."""

    def __init__(self, label: str, total: int) -> None:
        self.total, self.start = total, time.perf_counter()
        self._bar = rich.progress.Progress(
            *rich.progress.Progress.get_default_columns(),
            rich.progress.TextColumn("{task.fields[extra]}"),
            console=rich.console.Console(stderr=True),
        )
        self._task = self._bar.add_task(label, total=total, extra="")
        self._bar.start()

    def show(self, done: int, extra: str = "") -> None:
        self._bar.update(self._task, completed=done, extra=extra)

    def end(self) -> None:
        self._bar.stop()


# --- the gate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    tcp: int
    ws: int
    api: int


def gate_env(ports: Ports, services: str, database: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "COFFEEBUS_GATEWAY__HOST": "127.0.0.1",
            "COFFEEBUS_GATEWAY__TCP_PORT": str(ports.tcp),
            "COFFEEBUS_GATEWAY__WS_PORT": str(ports.ws),
            "COFFEEBUS_GATEWAY__HEARTBEAT_INTERVAL_S": str(GATE_HEARTBEAT_S),
            "COFFEEBUS_GATEWAY__MAX_CONNECTIONS": "1000000",
            "COFFEEBUS_GATEWAY__GATE_ID": GATE_ID,
            "COFFEEBUS_API__HOST": "127.0.0.1",
            "COFFEEBUS_API__PORT": str(ports.api),
            "COFFEEBUS_API__API_KEYS": "[]",
        }
    )
    if services == "real":
        # Own database and key prefix: the run neither reads nor disturbs anyone's data.
        env["COFFEEBUS_MONGO__DATABASE"] = database
        env["COFFEEBUS_REDIS__KEY_PREFIX"] = f"{database}:"
    return env


async def start_gate(services: str, ports: Ports, procs: Procs) -> None:
    """Start the gate (and, on the real services, the API) and wait until both answer."""
    env = gate_env(ports, services, procs.database)
    if services == "embedded":
        procs.gate = spawn(
            ["run", "--services", "embedded", "--no-demo"], env, procs.logs, "conn_bench-gate"
        )
    else:
        procs.api = spawn(["api"], env, procs.logs, "conn_bench-api")
        procs.gate = spawn(["gateway"], env, procs.logs, "conn_bench-gate")
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.api}") as http:
        while True:
            for proc in (procs.gate, procs.api):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"a CoffeeBus process exited early:\n{tail(procs.logs)}")
            with contextlib.suppress(httpx.HTTPError, OSError):
                if (await http.get("/healthz")).status_code == 200:
                    _, writer = await asyncio.open_connection("127.0.0.1", ports.tcp)
                    writer.close()
                    await writer.wait_closed()
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"CoffeeBus did not start in {START_TIMEOUT_S:g} s:\n{tail(procs.logs)}"
                )
            await asyncio.sleep(0.2)


async def import_users(api_port: int, first: int, count: int, in_flight: int) -> float:
    """PUT one user per connection through the HTTP API; returns the seconds it took.

    A 503 (a backing store busy: FerretDB-on-SQLite's "database is locked") is retried after
    its Retry-After, until `IMPORT_RETRY_S` have passed for that user."""
    users: Iterator[int] = iter(range(first, first + count))
    progress = Progress("users", count)
    done = 0

    # One client per worker: a shared httpx pool slows down as its connections grow.
    async def worker() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=60.0) as http:
            for user_id in users:
                body = {"nick_name": f"bench{user_id}", "token": token_for(user_id)}
                deadline = time.monotonic() + IMPORT_RETRY_S
                while True:
                    rsp = await http.put(f"/v1/users/{user_id}", json=body)
                    if rsp.status_code != 503 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(retry_after_s(rsp))
                if rsp.status_code != 200:
                    raise RuntimeError(f"importing user {user_id}: {rsp.status_code} {rsp.text}")
                done += 1
                if done % 500 == 0 or done == count:
                    progress.show(done)

    try:
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    finally:
        progress.end()
    return time.perf_counter() - progress.start


def retry_after_s(rsp: httpx.Response, default: float = 1.0) -> float:
    """The delay a response's Retry-After asks for, in seconds (the delta-seconds form;
    `default` when absent or an HTTP date)."""
    try:
        return max(0.0, float(rsp.headers.get("Retry-After", default)))
    except ValueError:
        return default


async def create_users(env: dict[str, str], first: int, count: int) -> float:
    """Create one user per connection straight in the store the gate and API use (the
    settings of `env`), in bulk; returns the seconds it took.

    On the real services: one ``PUT /v1/users/{id}`` is an upsert that took FerretDB v1
    ~90 ms, and under load its "database is locked" answers made the API return 503s; an
    unordered bulk insert (`UserStore.create_many`) takes ~0.2 ms a user."""
    settings = load_settings(env=env)
    progress = Progress("users", count)
    redis = connect_redis(settings.redis.url)
    mongo = connect_mongo(settings.mongo.url, socket_timeout=120)
    try:
        db = database(mongo, settings.mongo.database)
        await ensure_indexes(db)
        store = MongoUserStore(db, redis, keys=RedisKeys(namespace=settings.redis.key_prefix))
        for start in range(first, first + count, USER_BATCH):
            ids = range(start, min(first + count, start + USER_BATCH))
            created = await store.create_many(
                [
                    UserImport(user_id=UserId(u), nick_name=f"bench{u}", token=token_for(u))
                    for u in ids
                ]
            )
            if len(created) != len(ids):
                raise RuntimeError(f"{len(ids) - len(created)} of users {ids} existed already")
            progress.show(start + len(ids) - first)
    finally:
        progress.end()
        await redis.aclose()
        await mongo.close()
    return time.perf_counter() - progress.start


async def registry_count(api_port: int, expected: int) -> int | None:
    """The gate's connection count in the live-gate registry, once it reports `expected`
    (it reports every 10 s), or the last count seen."""
    seen: int | None = None
    deadline = time.monotonic() + REGISTRY_WAIT_S
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                gates = (await http.get("/v1/gates")).json()["gates"]
                counts = [g["connections"] for g in gates if g["gate_id"] == GATE_ID]
                if counts:
                    seen = int(counts[0])
                    if seen == expected:
                        return seen
            await asyncio.sleep(1.0)
    return seen


# --- the load ------------------------------------------------------------------------------


def start_workers(
    args: argparse.Namespace, target: int, port: int, procs: Procs
) -> list[SynchronizedArray[Any]]:
    ctx = multiprocessing.get_context("spawn")
    sources = tuple(f"127.0.0.{2 + k}" for k in range(max(2, math.ceil(target / CONNS_PER_SOURCE))))
    per, extra = divmod(target, args.processes)
    counters: list[SynchronizedArray[Any]] = []
    first = FIRST_USER
    for index in range(args.processes):
        count = per + (1 if index < extra else 0)
        job = Job(
            index=index,
            host="127.0.0.1",
            port=port,
            transport=args.transport,
            first_user=first,
            count=count,
            sources=sources,
            in_flight=args.in_flight,
            connect_timeout_s=30.0,
        )
        first += count
        mine, theirs = ctx.Pipe()
        array = ctx.Array("q", 2)
        proc = ctx.Process(target=run_worker, args=(job, theirs, array), name=f"conn-load-{index}")
        proc.start()
        theirs.close()
        procs.workers.append(proc)
        procs.pipes.append(mine)
        counters.append(array)
    return counters


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _slope_kb(samples: Sequence[tuple[int, int]]) -> float | None:
    """Least-squares KiB per connection over (connections, rss) samples of the connect phase."""
    points = [(float(n), float(r)) for n, r in samples]
    if len({n for n, _ in points}) < 3:
        return None
    return statistics.linear_regression([n for n, _ in points], [r for _, r in points]).slope


# --- the run -------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, procs: Procs) -> dict[str, Any]:
    hard = raise_nofile()
    host = machine()
    target = args.connections
    capacity = hard - FD_RESERVE
    clamped = False
    if target > capacity and not args.no_clamp:
        print(
            f"RLIMIT_NOFILE hard limit is {hard:,} here (raising it needs CAP_SYS_RESOURCE): "
            f"one gate process can hold at most ~{capacity:,} connections; measuring "
            f"{capacity:,} instead of {target:,} (--no-clamp to try anyway)",
            file=sys.stderr,
        )
        target, clamped = capacity, True
    # Each worker is bound by the same limit as the gate.
    args.processes = max(args.processes, math.ceil(target / (hard - FD_RESERVE)))

    ports = Ports(free_port(), free_port(), free_port())
    await start_gate(args.services, ports, procs)
    assert procs.gate is not None
    gate_pid = procs.gate.pid
    gate_nofile = nofile_limit(gate_pid)
    print(
        f"gate pid {gate_pid} ({args.services}), TCP {ports.tcp}, WS {ports.ws}, API {ports.api};"
        f" gate open-files limit {gate_nofile:,}",
        file=sys.stderr,
    )

    if args.services == "real":
        import_s = await create_users(gate_env(ports, "real", procs.database), FIRST_USER, target)
    else:
        import_s = await import_users(ports.api, FIRST_USER, target, args.import_in_flight)
    rss_before = await settled_rss(gate_pid)

    # Connect phase.
    port = ports.tcp if args.transport == "tcp" else ports.ws
    counters = start_workers(args, target, port, procs)
    progress = Progress("connect", target)
    samples: list[tuple[int, int]] = []
    results: dict[int, Any] = {}
    aborted = False
    while len(results) < len(procs.pipes):
        ok = sum(c[OK] for c in counters)
        failed = sum(c[FAILED] for c in counters)
        samples.append((ok, rss_kb(gate_pid)))
        progress.show(ok + failed, f"{failed:,} failed")
        for i, pipe in enumerate(procs.pipes):
            if i not in results and pipe.poll():
                results[i] = pipe.recv()
        if time.perf_counter() - progress.start > args.connect_limit:
            aborted = True
            break
        if procs.gate.poll() is not None:
            raise RuntimeError(f"the gate died during the connect phase:\n{tail(procs.logs)}")
        await asyncio.sleep(0.25)
    connect_s = time.perf_counter() - progress.start
    progress.end()
    if aborted:
        raise RuntimeError(
            f"connect phase exceeded --connect-limit {args.connect_limit:g} s "
            f"({sum(c[OK] for c in counters):,} logged in)"
        )
    held_clients = sum(r[1] for r in results.values())
    failed = sum(r[2] for r in results.values())
    errors: dict[str, int] = {}
    for r in results.values():
        for key, n in r[3].items():
            errors[key] = errors.get(key, 0) + n

    rss_after = await settled_rss(gate_pid)
    held_gate = established(ports.tcp if args.transport == "tcp" else ports.ws)
    registry = await registry_count(ports.api, held_clients)
    per_conn_kb = (rss_after - rss_before) / held_gate if held_gate else math.nan
    print(
        f"held {held_gate:,} (clients {held_clients:,}, registry {registry}), failed {failed:,}; "
        f"RSS {rss_before / 1024:,.1f} -> {rss_after / 1024:,.1f} MiB = "
        f"{per_conn_kb:.2f} KiB/connection",
        file=sys.stderr,
    )

    # Heartbeat phase: spread the chosen connections over the workers.
    hb_total = min(args.heartbeat_conns, held_clients)
    shares = [r[1] for _, r in sorted(results.items())]
    hb_split = [min(s, round(hb_total * s / held_clients)) if held_clients else 0 for s in shares]
    cpu_before = cpu_s(gate_pid)
    for pipe, n in zip(procs.pipes, hb_split, strict=True):
        pipe.send(("heartbeat", n, args.heartbeat_seconds))
    hb_progress = Progress("heartbeat", int(args.heartbeat_seconds))
    answers: list[Any] = []
    answer_by = time.monotonic() + args.heartbeat_seconds + HEARTBEAT_GRACE_S
    try:
        for pipe in procs.pipes:
            while not pipe.poll():
                if time.monotonic() > answer_by:
                    raise RuntimeError(
                        f"heartbeat phase: a load worker did not answer within "
                        f"{args.heartbeat_seconds + HEARTBEAT_GRACE_S:g} s"
                    )
                elapsed = int(time.perf_counter() - hb_progress.start)
                hb_progress.show(min(elapsed, hb_progress.total))
                await asyncio.sleep(0.25)
            answers.append(pipe.recv())
    finally:
        hb_progress.end()
    gate_cpu = cpu_s(gate_pid) - cpu_before
    answered = sum(a[1] for a in answers)
    hb_failed = sum(a[2] for a in answers)
    hb_elapsed = max(a[3] for a in answers)
    rtts = [x for a in answers for x in a[4]]
    rss_after_hb = rss_kb(gate_pid)

    return {
        "machine": host,
        "parameters": {
            "services": args.services,
            "transport": args.transport,
            "requested_connections": args.connections,
            "target_connections": target,
            "clamped_to_fd_limit": clamped,
            "processes": args.processes,
            "in_flight_per_process": args.in_flight,
            "heartbeat_conns": hb_total,
            "heartbeat_seconds": args.heartbeat_seconds,
            "gate_heartbeat_interval_s": GATE_HEARTBEAT_S,
            "gate_open_files_limit": gate_nofile,
            "command": "uv run python -m bench.conn_bench " + " ".join(sys.argv[1:]),
        },
        "figures": {
            "idle_per_gate": held_gate,
            "held_by_clients": held_clients,
            "registry_connections": registry,
            "failed": failed,
            "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
            "user_import_s": round(import_s, 2),
            "connect_s": round(connect_s, 2),
            "connects_per_s": round(held_clients / connect_s, 1),
            "rss_before_kb": rss_before,
            "rss_after_kb": rss_after,
            "rss_kb_per_conn": round(per_conn_kb, 2),
            "rss_slope_kb_per_conn": _round(_slope_kb(samples)),
            "rss_after_heartbeats_kb": rss_after_hb,
            "heartbeat_answered": answered,
            "heartbeat_failed": hb_failed,
            "heartbeats_per_s": round(answered / hb_elapsed, 1) if hb_elapsed else None,
            "heartbeat_rtt_p50_ms": _round(_percentile(rtts, 0.50) * 1000),
            "heartbeat_rtt_p99_ms": _round(_percentile(rtts, 0.99) * 1000),
            "gate_cpu_s_heartbeats": round(gate_cpu, 2),
            "heartbeats_per_gate_cpu_s": round(answered / gate_cpu, 1) if gate_cpu else None,
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 2)


def stop(procs: Procs) -> None:
    """Close the clients, then stop the gate (SIGTERM, SIGKILL after a while); on the real
    services the run's database goes with it."""
    stop_workers(procs.pipes, procs.workers)
    terminate((procs.gate, procs.api))
    remove_logs(procs.logs)
    if procs.api is not None:
        end_run(procs.database, GATE_ID)


def save(result: dict[str, Any], path: Path) -> None:
    """Keep one entry per (services, transport, requested connections) in the results file."""
    data: dict[str, Any] = {"runs": []}
    if path.exists():
        with contextlib.suppress(ValueError):
            data = json.loads(path.read_text())
    p = result["parameters"]
    key = (p["services"], p["transport"], p["requested_connections"])
    runs = [
        r
        for r in data.get("runs", [])
        if (
            r["parameters"]["services"],
            r["parameters"]["transport"],
            r["parameters"]["requested_connections"],
        )
        != key
    ]
    runs.append(
        {"parameters": p, "figures": result["figures"], "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    )
    runs.sort(
        key=lambda r: (
            r["parameters"]["services"],
            r["parameters"]["transport"],
            r["parameters"]["requested_connections"],
        )
    )
    data = {"machine": result["machine"], "runs": runs}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's options (`make bench` builds them too)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=5_000, help="idle connections to open")
    parser.add_argument("--transport", choices=("tcp", "ws"), default="tcp")
    parser.add_argument("--services", choices=("embedded", "real"), default="embedded")
    parser.add_argument(
        "--processes", type=int, default=2, help="load worker processes (more if fds require)"
    )
    parser.add_argument("--in-flight", type=int, default=200, help="connects in flight per worker")
    parser.add_argument("--import-in-flight", type=int, default=16, help="user imports in flight")
    parser.add_argument("--heartbeat-conns", type=int, default=1_000)
    parser.add_argument("--heartbeat-seconds", type=float, default=10.0)
    parser.add_argument(
        "--connect-limit", type=float, default=600.0, help="abort the connect phase after this"
    )
    parser.add_argument(
        "--no-clamp", action="store_true", help="do not clamp the target to the fd limit"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)

    procs = Procs()
    try:
        result = asyncio.run(bench(args, procs))
    finally:  # also on Ctrl-C and errors: no process outlives the benchmark
        stop(procs)
    save(result, args.output)
    print(json.dumps(result["figures"], indent=2))


if __name__ == "__main__":
    main()
