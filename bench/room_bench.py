"""Chat room benchmark (issue 15, section 2): one room, read diffusion, on the real services.

    uv run python -m bench.room_bench --members 5000 [--gates 1|2] [--rates 5,10,20,40]

What it does, in order:

1. Starts, as processes of their own on Kafka, Redis and FerretDB (a database and Redis key
   prefix of the run's own, dropped at the end): the server API, one ``coffeebus consume
   room`` (its group id made unique and started at the topic's end, so no one else's room
   records are its work) and `--gates` gates. The gates' per-user room rate and frame rate
   are raised for the run: the senders are a few users sending for the whole room.
2. Creates the users in bulk in the run's database (before step 1's processes start, so
   that they find its indexes in place) and one room (``POST /v1/rooms``, history 0: a
   joiner gets nothing to read).
3. `--processes` load workers (`bench._room_load`) open `--members` bare TCP connections,
   spread evenly over the gates, log in and join the room; every `--sample-every`-th member
   decodes what it gets for the latency.
4. `--senders` SDK clients (on the gates in turn) join and send at each rate of `--rates`
   (messages per second into the room, all senders together), each step `--warmup` seconds
   then `--step-seconds` measured: deliveries per second out (RoomMsg frames the members
   counted), p50/p99 send→deliver (the gate received the send → a member read it), and the
   gates' CPU seconds per delivery (``/proc``). The ramp stops after the first step whose
   p99 is above `--p99-limit-ms` or that delivered less than `DELIVERED_SHARE` of what was
   sent.
5. Closes everything (also on Ctrl-C or an error).

The headline is the highest deliveries per second of a step within the p99 limit. On a small
machine the load side (the workers reading the frames) shares the CPU with the gates: the
gates' CPU per delivery is the figure that does not depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path
from typing import IO, Any

import httpx

from bench._procs import end_run, remove_logs, spawn, stop_workers, tail, terminate
from bench._room_load import DELIVERED, DROPPED, FAILED, RoomJob, run_worker
from bench._server import start_at_ends
from bench.conn_bench import cpu_s, create_users, free_port, raise_nofile, token_for
from bench.stats import percentile
from bus.topology import default_topology_path, load_topology
from coffeebus.settings import load_settings
from sdk.client import Client
from sdk.errors import SdkError

__all__ = ["bench", "main", "parse"]

RESULTS = Path(__file__).parent / "results" / "rooms.json"
#: Users start here, far from the demo users, the connection benchmark's and tests' ids.
FIRST_USER = 80_000_000
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
JOIN_TIMEOUT_S = 600.0
#: Members per loopback source address (one address has ~28k ephemeral ports).
MEMBERS_PER_SOURCE = 20_000
#: A step that delivered less than this share of what was sent ends the ramp.
DELIVERED_SHARE = 0.95
#: Sends in flight per sender before the sender waits.
SEND_WINDOW = 64
GATE_HEARTBEAT_S = 3600


@dataclass
class Procs:
    """Every process the benchmark started, for clean-up on any exit."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    services: list[subprocess.Popen[bytes]] = field(default_factory=list)
    gates: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[SpawnProcess] = field(default_factory=list)
    pipes: list[Connection] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)
    topology_file: Path | None = None

    @property
    def database(self) -> str:
        return f"cbbench_room_{self.suffix}"


@dataclass(frozen=True)
class Gate:
    tcp: int
    ws: int
    gate_id: str


def _env(procs: Procs, api_port: int, gate: Gate | None = None) -> dict[str, str]:
    assert procs.topology_file is not None
    env = dict(os.environ)
    env.update(
        {
            "COFFEEBUS_TOPOLOGY": str(procs.topology_file),
            "COFFEEBUS_MONGO__DATABASE": procs.database,
            "COFFEEBUS_REDIS__KEY_PREFIX": f"{procs.database}:",
            "COFFEEBUS_API__HOST": "127.0.0.1",
            "COFFEEBUS_API__PORT": str(api_port),
            "COFFEEBUS_API__API_KEYS": "[]",
            # A few senders talk for the whole room: their own limits are not measured here.
            "COFFEEBUS_ROOMS__USER_RATE_PER_S": "1000000",
            "COFFEEBUS_ROOMS__USER_RATE_BURST": "1000000",
            "COFFEEBUS_ROOMS__ROOM_RATE_PER_S": "1000000",
            "COFFEEBUS_ROOMS__ROOM_RATE_BURST": "1000000",
            "COFFEEBUS_GATEWAY__RATE_LIMIT_PER_S": "1000000",
            "COFFEEBUS_GATEWAY__RATE_LIMIT_BURST": "1000000",
            "COFFEEBUS_GATEWAY__HEARTBEAT_INTERVAL_S": str(GATE_HEARTBEAT_S),
            "COFFEEBUS_GATEWAY__MAX_CONNECTIONS": "1000000",
            "COFFEEBUS_LOG__LEVEL": "WARNING",
        }
    )
    if gate is not None:
        env.update(
            {
                "COFFEEBUS_GATEWAY__HOST": "127.0.0.1",
                "COFFEEBUS_GATEWAY__TCP_PORT": str(gate.tcp),
                "COFFEEBUS_GATEWAY__WS_PORT": str(gate.ws),
                "COFFEEBUS_GATEWAY__GATE_ID": gate.gate_id,
            }
        )
    return env


async def _start(procs: Procs, gates: Sequence[Gate], api_port: int) -> None:
    """The API, the room group and the gates, once each answers."""
    settings = load_settings(env=_env(procs, api_port))
    topology = load_topology(procs.topology_file)
    await start_at_ends(settings, topology, ["room"])
    procs.services.append(spawn(["api"], _env(procs, api_port), procs.logs, "room_bench-api"))
    procs.services.append(
        spawn(["consume", "room"], _env(procs, api_port), procs.logs, "room_bench-room")
    )
    for gate in gates:
        procs.gates.append(
            spawn(
                ["gateway"], _env(procs, api_port, gate), procs.logs, f"room_bench-{gate.gate_id}"
            )
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
        waiting = [*gates]
        while True:
            for proc in (*procs.services, *procs.gates):
                if proc.poll() is not None:
                    raise RuntimeError(f"a CoffeeBus process exited early:\n{tail(procs.logs)}")
            with contextlib.suppress(httpx.HTTPError, OSError):
                if (await http.get("/healthz")).status_code == 200:
                    for gate in list(waiting):
                        with contextlib.suppress(OSError):
                            _, writer = await asyncio.open_connection("127.0.0.1", gate.tcp)
                            writer.close()
                            await writer.wait_closed()
                            waiting.remove(gate)
                    if not waiting:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"CoffeeBus did not start in {START_TIMEOUT_S:g} s:\n{tail(procs.logs)}"
                )
            await asyncio.sleep(0.2)


def _write_topology(procs: Procs) -> None:
    """topology.yaml with the run's own group ids (the room group starts at the ends)."""
    text = default_topology_path().read_text()
    path = Path(tempfile.gettempdir()) / f"room_bench-topology-{procs.suffix}.yaml"
    path.write_text(re.sub(r"group_id: (\S+)", rf"group_id: \1.{procs.suffix}", text))
    procs.topology_file = path


def _start_workers(
    args: argparse.Namespace, gates: Sequence[Gate], room_id: int, procs: Procs
) -> list[SynchronizedArray[Any]]:
    ctx = multiprocessing.get_context("spawn")
    sources = tuple(
        f"127.0.0.{2 + k}" for k in range(max(1, math.ceil(args.members / MEMBERS_PER_SOURCE)))
    )
    # Members spread evenly over the gates, and each gate's over the workers.
    per_gate = [
        args.members // len(gates) + (1 if i < args.members % len(gates) else 0)
        for i in range(len(gates))
    ]
    jobs: list[list[tuple[int, int, int]]] = [[] for _ in range(args.processes)]
    first = FIRST_USER
    for gate, count in zip(gates, per_gate, strict=True):
        for w in range(args.processes):
            share = count // args.processes + (1 if w < count % args.processes else 0)
            if share:
                jobs[w].append((gate.tcp, first, share))
                first += share
    counters: list[SynchronizedArray[Any]] = []
    for index, targets in enumerate(jobs):
        job = RoomJob(
            index=index,
            targets=tuple(targets),
            room_id=room_id,
            sample_every=args.sample_every,
            in_flight=args.in_flight,
            sources=sources,
        )
        mine, theirs = ctx.Pipe()
        array = ctx.Array("q", 4)
        proc = ctx.Process(target=run_worker, args=(job, theirs, array), name=f"room-load-{index}")
        proc.start()
        theirs.close()
        procs.workers.append(proc)
        procs.pipes.append(mine)
        counters.append(array)
    return counters


async def _ask_samples(procs: Procs) -> list[float]:
    def ask() -> list[float]:
        out: list[float] = []
        for pipe in procs.pipes:
            pipe.send(("samples",))
        for pipe in procs.pipes:
            reply = pipe.recv()
            out.extend(reply[1])
        return out

    return await asyncio.to_thread(ask)


class _Senders:
    """SDK clients in the room sending at a given total rate; what they got answered."""

    def __init__(self, clients: list[Client], room_id: int, msg_bytes: int) -> None:
        self._clients = clients
        self._room = room_id
        self._msg_bytes = msg_bytes
        self.sent = 0
        self.refused = 0
        self._windows = [asyncio.Semaphore(SEND_WINDOW) for _ in clients]

    async def _one(self, index: int) -> None:
        stamp = f"{time.time():.6f} ".encode()
        data = stamp + b"x" * max(0, self._msg_bytes - len(stamp))
        try:
            await self._clients[index].send_room(self._room, data)
            self.sent += 1
        except SdkError:
            self.refused += 1
        finally:
            self._windows[index].release()

    async def run(self, rate: float, seconds: float) -> None:
        """Send `rate` messages per second for `seconds` (paced; a full window waits)."""
        interval = 1.0 / rate
        start = time.monotonic()
        n = 0
        tasks: set[asyncio.Task[None]] = set()
        while (now := time.monotonic()) < start + seconds:
            due = start + n * interval
            if due > now:
                await asyncio.sleep(due - now)
            index = n % len(self._clients)
            await self._windows[index].acquire()
            task = asyncio.create_task(self._one(index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.wait(tasks, timeout=30)


def _counter(counters: Sequence[SynchronizedArray[Any]], index: int) -> int:
    return sum(int(c[index]) for c in counters)


async def _until_delivered(counters: Sequence[SynchronizedArray[Any]], total: int) -> None:
    """Until the members counted `total` deliveries, 5 s at most (shared counters have no
    event to wait on: polled)."""
    for _ in range(100):
        if _counter(counters, DELIVERED) >= total:
            return
        await asyncio.sleep(0.05)


async def bench(args: argparse.Namespace, procs: Procs) -> dict[str, Any]:
    raise_nofile()
    _write_topology(procs)
    api_port = free_port()
    gates = [
        Gate(tcp=free_port(), ws=free_port(), gate_id=f"bench-room-{procs.suffix}-{i + 1}")
        for i in range(args.gates)
    ]
    # Users first: their bulk insert also creates the run's database and its indexes, which
    # the processes then find in place (FerretDB v1 drops connections of several processes
    # creating the indexes of one new database at once).
    await create_users(_env(procs, api_port), FIRST_USER, args.members + args.senders)
    await _start(procs, gates, api_port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as http:
        rsp = await http.post(
            "/v1/rooms", json={"name": "bench", "history": 0, "max_msg_bytes": 4096}
        )
        rsp.raise_for_status()
        room_id = int(rsp.json()["room_id"])

    started = time.perf_counter()
    counters = _start_workers(args, gates, room_id, procs)
    replies = await asyncio.wait_for(
        asyncio.to_thread(lambda: [pipe.recv() for pipe in procs.pipes]), JOIN_TIMEOUT_S
    )
    joined = sum(r[1] for r in replies)
    join_errors: dict[str, int] = {}
    for reply in replies:
        for key, count in reply[2].items():
            join_errors[key] = join_errors.get(key, 0) + count
    join_s = time.perf_counter() - started
    if joined == 0:
        raise RuntimeError(f"no member joined the room: {join_errors}")

    senders: list[Client] = []
    for i in range(args.senders):
        user = FIRST_USER + args.members + i
        client = Client(heartbeat_interval=None, reconnect=False, request_timeout=30.0)
        await client.connect("127.0.0.1", gates[i % len(gates)].tcp)
        await client.login(user, token_for(user))
        await client.join_room(room_id)
        senders.append(client)
    send = _Senders(senders, room_id, args.msg_bytes)
    gate_pids = [p.pid for p in procs.gates]
    steps = []
    try:
        for rate in args.rates:
            await send.run(rate, args.warmup)
            # The warm-up's messages arrive before the step starts: they are not its figures.
            await _until_delivered(counters, send.sent * joined)
            await _ask_samples(procs)  # forget the warm-up's
            delivered0 = _counter(counters, DELIVERED)
            sent0 = send.sent
            cpu0 = sum(cpu_s(pid) for pid in gate_pids)
            t0 = time.perf_counter()
            await send.run(rate, args.step_seconds)
            elapsed = time.perf_counter() - t0
            # What was sent in the step may still be on its way: wait for it, bounded.
            expected = (send.sent - sent0) * joined
            await _until_delivered(counters, delivered0 + expected)
            delivered = _counter(counters, DELIVERED) - delivered0
            cpu = sum(cpu_s(pid) for pid in gate_pids) - cpu0
            samples = await _ask_samples(procs)
            step = {
                "rate_in": rate,
                "messages_in_per_s": round((send.sent - sent0) / elapsed, 1),
                "deliveries_per_s": round(delivered / elapsed),
                "delivered_share": round(delivered / expected, 4) if expected else None,
                "p50_ms": _ms(percentile(samples, 0.5)),
                "p99_ms": _ms(percentile(samples, 0.99)),
                "gate_cpu_us_per_delivery": round(cpu / delivered * 1e6, 2) if delivered else None,
                "gate_cpu_share": round(cpu / elapsed / len(gate_pids), 3),
                "samples": len(samples),
            }
            steps.append(step)
            print(json.dumps(step), file=sys.stderr)
            p99 = step["p99_ms"]
            if (p99 is None or p99 > args.p99_limit_ms) or (
                expected and delivered < DELIVERED_SHARE * expected
            ):
                break
    finally:
        for client in senders:
            with contextlib.suppress(Exception):
                await client.close()
    within = [s for s in steps if s["p99_ms"] is not None and s["p99_ms"] <= args.p99_limit_ms]
    best = max(within, key=lambda s: s["deliveries_per_s"], default=None)
    return {
        "figures": {
            "members": joined,
            "gates": args.gates,
            "max_deliveries_per_s_p99": best["deliveries_per_s"] if best else None,
            "messages_in_per_s": best["messages_in_per_s"] if best else None,
            "p99_ms": best["p99_ms"] if best else None,
            "p50_ms": best["p50_ms"] if best else None,
            "gate_cpu_us_per_delivery": best["gate_cpu_us_per_delivery"] if best else None,
            "dropped_slow": _counter(counters, DROPPED),
            "join_failed": _counter(counters, FAILED),
            "join_s": round(join_s, 1),
            "refused_sends": send.refused,
            "steps": steps,
        },
        "parameters": {
            "members": args.members,
            "gates": args.gates,
            "senders": args.senders,
            "rates": list(args.rates),
            "step_s": args.step_seconds,
            "warmup_s": args.warmup,
            "msg_bytes": args.msg_bytes,
            "p99_limit_ms": args.p99_limit_ms,
            "load_processes": args.processes,
            "join_errors": join_errors,
        },
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def stop(procs: Procs) -> None:
    """Close the members, then stop every process (SIGTERM, SIGKILL after a while) and drop
    the run's database and keys."""
    stop_workers(procs.pipes, procs.workers)
    terminate((*procs.gates, *procs.services))
    remove_logs(procs.logs)
    if procs.topology_file is not None:
        procs.topology_file.unlink(missing_ok=True)
    end_run(procs.database, procs.suffix)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=5_000)
    parser.add_argument("--gates", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[5.0, 10.0, 20.0, 40.0],
        help="messages per second into the room, one step each",
    )
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--msg-bytes", type=int, default=64)
    parser.add_argument("--p99-limit-ms", type=float, default=200.0)
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--processes", type=int, default=2, help="load worker processes")
    parser.add_argument("--in-flight", type=int, default=200, help="joins in flight per worker")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    procs = Procs()
    try:
        result = asyncio.run(bench(args, procs))
    finally:  # also on Ctrl-C and errors: no process outlives the benchmark
        stop(procs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["figures"], indent=2))


if __name__ == "__main__":
    main()
