"""`make soak`: CoffeeBus at half its measured capacity for 10 minutes — memory flat, consumer
lag bounded (the projection's too), no error growth (issues 8.4 and 13).

    uv run python -m tests.chaos.soak                 # capacity step-up, then 10 minutes
    uv run python -m tests.chaos.soak --minutes 1     # the quick version
    uv run python -m tests.chaos.soak --capacity 60   # skip the step-up

The system under test runs as it does in production, one process per role — a gate
(`coffeebus gateway`), the consumers of the message path (`coffeebus consume msg fanout
ack`) and the projection (`coffeebus consume projection`), which writes the logs of record
into the document store behind them — on private
Kafka, Redis and FerretDB instances (`tests.chaos.services`: free ports, a temporary
COFFEEBUS_HOME reusing the cached builds), so the team's shared services are neither loaded
nor counted. This process is the load: `--pairs` pairs of SDK clients writing to each other
at a paced rate, receivers acking.

1. **Capacity**: after one uncounted message per client (the first message of a conversation
   reserves its seq sections), steps of `STEP_S` seconds at rising rates from 2.5 msg/s,
   doubling; a step holds if at least 90% of
   its target rate was acked, its p95 send→ack latency stayed under `MAX_P95_S`, and the
   groups' lag drained within `LAG_BOUND_S` after it (acks only show that the msg group
   kept up; fan-out must too). The capacity is the best acked rate of the steps that held.
2. **Soak** at half of it, sampling every `--interval` seconds: the RSS of every process
   (the three CoffeeBus processes are judged; Kafka, Redis, FerretDB and this driver are
   recorded), the lag of each consumer group of the message path and, apart, the
   projection's, the error count (WARNING/ERROR lines and tracebacks in the CoffeeBus
   processes' logs, plus sends that failed in the driver), acked messages and latency.
3. **Verdict**, on the second half of the soak (the first half is warm-up: caches fill,
   the JIT of the JVM settles, Python's allocator reaches its working set):
   - memory flat: the least-squares slope of each CoffeeBus process's RSS is at most
     `MAX_RSS_SLOPE_MIB_PER_MIN`;
   - lag bounded: the groups' summed lag, in seconds of input (lag records divided by the
     rate records arrive on their topics, measured between samples), stays at most
     `LAG_BOUND_S`, and it drains to 0 within `DRAIN_S` after the load stops;
   - projection lag bounded: the projection's lag, in seconds of input of the log topics,
     stays at most `PROJECTION_LAG_BOUND_S` (it writes behind in large batches, so its
     bound is looser), and it returns to 0 within `DRAIN_S` after the load stops; its
     highest and lowest lag in records are reported;
   - no error growth: no new error in the second half, and no send given up.

Samples and verdict go to bench/results/soak.json; a summary is printed. Exit status 0 means
every criterion held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bus.admin import apply, lag
from bus.topology import Topology, default_topology_path, load_topology
from coffeebus.settings import KafkaSettings, MongoSettings, RedisSettings, Settings
from coffeebus.wiring import Mode, open_runtime
from schemas.ids import UserId
from sdk.client import Client
from sdk.errors import ConnectionLostError, NotConnectedError, RequestTimeoutError, ServerError
from store.users import UserImport
from tests.chaos.processes import RoleProcess, role_env
from tests.chaos.services import PrivateServices, free_port

log = logging.getLogger("soak")

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "soak.json"
GROUPS = ("msg", "fanout", "ack")
PROJECTION = "projection"
STEP_RATES = (2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
STEP_S = 15.0
MAX_P95_S = 2.0
MAX_RSS_SLOPE_MIB_PER_MIN = 2.0
LAG_BOUND_S = 5.0
#: The projection writes behind in bulk: seconds of log input it may lag by. Far below what
#: the hot state covers (`[hot] idle_ttl_s`) and the logs keep (topology.yaml).
PROJECTION_LAG_BOUND_S = 30.0
DRAIN_S = 60.0
REQUEST_TIMEOUT_S = 10.0
_ERROR_LINE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|^Traceback")


def rss_mib(pid: int) -> float | None:
    """Resident set size of `pid` in MiB (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    return statistics.linear_regression(xs, ys).slope * 60.0


class Driver:
    """Paced c2c sends from pairs of clients; counts acks, latencies and failures."""

    def __init__(self, clients: list[Client], users: list[UserId]) -> None:
        self.clients = clients
        self.users = users
        self.acked = 0
        self.failed = 0
        self.latencies: list[float] = []

    async def run(self, rate: float, seconds: float) -> None:
        """Send at `rate` msg/s over all clients for `seconds`; wait for the last acks."""
        interval = 1.0 / rate
        start = time.monotonic()
        sends: set[asyncio.Task[None]] = set()
        n = 0
        while (slot := start + n * interval) < start + seconds:
            delay = slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load
            i = n % len(self.clients)
            peer = self.users[i ^ 1]  # pairs: 0<->1, 2<->3, ...
            task = asyncio.create_task(self._send(self.clients[i], peer))
            sends.add(task)
            task.add_done_callback(sends.discard)
            n += 1
        if sends:
            await asyncio.wait(sends)

    async def warm_up(self) -> None:
        """One message per client, not counted: the first message of a conversation reserves
        its seq sections and fills the caches, which no later one pays."""
        await asyncio.gather(
            *(c.send_text(self.users[i ^ 1], "warm-up") for i, c in enumerate(self.clients))
        )

    async def _send(self, client: Client, peer: UserId) -> None:
        client_msg_id = str(uuid.uuid4())
        t0 = time.monotonic()
        try:
            await client.send_text(peer, f"soak {t0:.3f}", client_msg_id=client_msg_id)
        except (RequestTimeoutError, ConnectionLostError, NotConnectedError, ServerError) as exc:
            self.failed += 1
            log.warning("send failed: %r", exc)
            return
        self.acked += 1
        self.latencies.append(time.monotonic() - t0)

    def take_latencies(self) -> list[float]:
        taken, self.latencies = self.latencies, []
        return taken


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def error_lines(paths: Sequence[Path]) -> list[str]:
    """The WARNING/ERROR lines and tracebacks in the processes' logs so far."""
    found: list[str] = []
    for path in paths:
        with path.open(errors="replace") as lines:
            found += [f"{path.stem}: {line.rstrip()}" for line in lines if _ERROR_LINE.search(line)]
    return found


class Soak:
    """One soak run: private services, the two CoffeeBus processes, the driver, the samples."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.services = PrivateServices(root, kafka_nodes=1, redis=True, ferretdb=True)
        self.suffix = uuid.uuid4().hex[:8]
        self.processes: dict[str, RoleProcess] = {}
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._last_end: tuple[float, int] | None = None
        self._last_log_end: tuple[float, int] | None = None
        self.topology: Topology = load_topology()

    def settings(self) -> Settings:
        s = self.services
        return Settings(
            kafka=KafkaSettings(bootstrap_servers=s.kafka_bootstrap, linger_ms=1),
            mongo=MongoSettings(url=s.mongo_url, database=f"soak_{self.suffix}"),
            redis=RedisSettings(url=s.redis_url, key_prefix=f"soak:{self.suffix}:"),
        )

    def env(self, tcp_port: int) -> dict[str, str]:
        return {
            **role_env(self.settings(), default_topology_path()),
            "COFFEEBUS_GATEWAY__HOST": "127.0.0.1",
            "COFFEEBUS_GATEWAY__TCP_PORT": str(tcp_port),
            "COFFEEBUS_GATEWAY__WS_PORT": "0",
            # Clients send at most rate/pairs msg/s each: the per-connection limit is not
            # what is being measured.
            "COFFEEBUS_GATEWAY__RATE_LIMIT_PER_S": "1000",
            "COFFEEBUS_GATEWAY__RATE_LIMIT_BURST": "1000",
        }

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        process = RoleProcess(name, argv, env, self.root)
        process.start()
        self.processes[name] = process

    @property
    def logs(self) -> list[Path]:
        return [self.root / f"{name}-1.log" for name in self.processes]

    async def start(self, tcp_port: int) -> tuple[list[Client], list[UserId]]:
        await self.services.start()
        bootstrap = self.services.kafka_bootstrap
        await apply(self.topology, bootstrap)
        env = self.env(tcp_port)
        self.spawn("consumers", ["consume", *GROUPS], env)
        self.spawn(PROJECTION, ["consume", PROJECTION], env)
        self.spawn("gate", ["gateway", "--gate-id", f"soak-{self.suffix}"], env)
        users: list[UserId] = []
        async with open_runtime(self.settings(), Mode.REAL, client_id="soak") as runtime:
            for n in range(2 * self.args.pairs):
                uid = UserId((1 << 40) + int(self.suffix, 16) % (1 << 30) * 1000 + n)
                await runtime.users.upsert(
                    UserImport(user_id=uid, nick_name=f"soak{n}", token=f"tok-{uid}")
                )
                users.append(uid)
        clients = []
        for uid in users:
            client = Client(heartbeat_interval=30.0, request_timeout=REQUEST_TIMEOUT_S)
            async with asyncio.timeout(120):
                while True:  # the gate process binds its port when it is ready
                    try:
                        await client.connect("127.0.0.1", tcp_port)
                        break
                    except OSError:
                        self.check_alive()
                        await asyncio.sleep(0.5)
            await client.login(uid, f"tok-{uid}")
            clients.append(client)
        return clients, users

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.pid is None:
                tail = (self.root / f"{name}-1.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited:\n{tail}")

    async def capacity(self, driver: Driver) -> tuple[float, list[dict[str, float | None]]]:
        steps: list[dict[str, float | None]] = []
        best = 0.0
        for rate in STEP_RATES:
            acked0, failed0 = driver.acked, driver.failed
            driver.take_latencies()
            t0 = time.monotonic()
            await driver.run(rate, STEP_S)
            elapsed = time.monotonic() - t0
            latencies = driver.take_latencies()
            achieved = (driver.acked - acked0) / elapsed
            p95 = percentile(latencies, 0.95)
            # Acks only say the msg group kept up; fan-out (and acks of deliveries) must too.
            drain_s = await self.drained(within=LAG_BOUND_S)
            held = (
                driver.failed == failed0
                and achieved >= 0.9 * rate
                and p95 <= MAX_P95_S
                and drain_s is not None
            )
            steps.append(
                {
                    "rate": rate,
                    "acked_per_s": achieved,
                    "p95_s": p95,
                    "drain_s": drain_s,
                    "held": held,
                }
            )
            print(
                f"  step {rate:6.1f} msg/s: acked {achieved:6.1f}/s, p95 {p95:.2f}s, "
                f"lag drained in {drain_s if drain_s is None else round(drain_s, 1)}s",
                flush=True,
            )
            if not held:
                break
            best = max(best, achieved)
            self.check_alive()
        return best, steps

    async def sample(self, t0: float, driver: Driver) -> dict[str, Any]:
        pids = {name: p.pid for name, p in self.processes.items() if p.pid is not None}
        pids["driver"] = os.getpid()
        for name in self.services.names:
            if (pid := self.services.pid(name)) is not None:
                pids[name] = pid
        every = await lag(self.topology, self.services.kafka_bootstrap, [*GROUPS, PROJECTION])
        lags = [g for g in every if g.group in GROUPS]
        (projection,) = (g for g in every if g.group == PROJECTION)
        now = time.monotonic()
        latencies = driver.take_latencies()
        # Lag in seconds of input: records behind / records arriving per second.
        lag_records = sum(g.total for g in lags)
        end = sum(p.end for g in lags for p in g.partitions)
        arriving = 0.0
        if self._last_end is not None and now > self._last_end[0]:
            arriving = (end - self._last_end[1]) / (now - self._last_end[0])
        self._last_end = (now, end)
        lag_s = lag_records / arriving if arriving > 0 else (0.0 if lag_records == 0 else None)
        # The same for the projection, on the log topics.
        log_end = sum(p.end for p in projection.partitions)
        logged = 0.0
        if self._last_log_end is not None and now > self._last_log_end[0]:
            logged = (log_end - self._last_log_end[1]) / (now - self._last_log_end[0])
        self._last_log_end = (now, log_end)
        behind = projection.total
        projection_lag_s = behind / logged if logged > 0 else (0.0 if behind == 0 else None)
        self.errors = error_lines(self.logs)
        row = {
            "t_s": round(now - t0, 1),
            "rss_mib": {name: rss_mib(pid) for name, pid in pids.items()},
            "lag": {g.group: g.total for g in lags},
            "records_per_s": round(arriving, 1),
            "lag_s": None if lag_s is None else round(lag_s, 2),
            "projection_lag": behind,
            "log_records_per_s": round(logged, 1),
            "projection_lag_s": None if projection_lag_s is None else round(projection_lag_s, 2),
            "errors": len(self.errors) + driver.failed,
            "acked": driver.acked,
            "p50_s": percentile(latencies, 0.5),
            "p99_s": percentile(latencies, 0.99),
        }
        self.samples.append(row)
        return row

    async def soak(self, driver: Driver, rate: float, seconds: float) -> None:
        t0 = time.monotonic()
        load = asyncio.create_task(driver.run(rate, seconds))
        try:
            while not load.done():
                row = await self.sample(t0, driver)
                rss = ", ".join(f"{k} {v:.0f}" for k, v in row["rss_mib"].items() if v)
                print(
                    f"  t={row['t_s']:6.1f}s acked={row['acked']} lag={sum(row['lag'].values())} "
                    f"({row['lag_s']}s) projection lag={row['projection_lag']} "
                    f"({row['projection_lag_s']}s) "
                    f"errors={row['errors']} p99={row['p99_s']:.2f}s rss MiB: {rss}",
                    flush=True,
                )
                self.check_alive()
                await asyncio.wait({load}, timeout=self.args.interval)
        finally:
            if not load.done():
                load.cancel()
        await load

    async def drained(
        self, within: float = DRAIN_S, groups: Sequence[str] = GROUPS
    ) -> float | None:
        """Seconds until the lag of every one of `groups` is 0 after the load stopped (None:
        not `within`)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < within:
            lags = await lag(self.topology, self.services.kafka_bootstrap, list(groups))
            if all(g.total == 0 for g in lags):
                return time.monotonic() - t0
            await asyncio.sleep(1.0)  # polling the broker: there is no event for "lag is 0"
        return None

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()


def verdict(
    samples: list[dict[str, Any]], drain_s: float | None, projection_drain_s: float | None
) -> dict[str, Any]:
    """The criteria of the module docstring, on the second half of `samples`."""
    half = samples[len(samples) // 2 :]
    slopes = {
        name: slope_per_min(
            [(s["t_s"], s["rss_mib"][name]) for s in half if s["rss_mib"].get(name)]
        )
        for name in ("gate", "consumers", PROJECTION)
    }
    # None: records were behind while none arrived (a stall), which no bound accepts.
    lags = [s["lag_s"] for s in half]
    max_lag_s = None if None in lags else max(lags, default=0.0)
    projection_lags = [s["projection_lag_s"] for s in half]
    max_projection_lag_s = None if None in projection_lags else max(projection_lags, default=0.0)
    projection_records = [s["projection_lag"] for s in half]
    new_errors = half[-1]["errors"] - half[0]["errors"] if half else 0
    checks = {
        "memory_flat": all(v <= MAX_RSS_SLOPE_MIB_PER_MIN for v in slopes.values()),
        "lag_bounded": max_lag_s is not None and max_lag_s <= LAG_BOUND_S and drain_s is not None,
        "projection_lag_bounded": (
            max_projection_lag_s is not None
            and max_projection_lag_s <= PROJECTION_LAG_BOUND_S
            and projection_drain_s is not None
        ),
        "no_error_growth": new_errors == 0,
    }
    return {
        "rss_slope_mib_per_min": slopes,
        "rss_slope_bound_mib_per_min": MAX_RSS_SLOPE_MIB_PER_MIN,
        "max_lag_s_second_half": max_lag_s,
        "lag_bound_s": LAG_BOUND_S,
        "drain_s": drain_s,
        "projection_max_lag_second_half": max(projection_records, default=None),
        "projection_min_lag_second_half": min(projection_records, default=None),
        "projection_max_lag_s_second_half": max_projection_lag_s,
        "projection_lag_bound_s": PROJECTION_LAG_BOUND_S,
        "projection_drain_s": projection_drain_s,
        "new_errors_second_half": new_errors,
        "checks": checks,
        "passed": all(checks.values()),
    }


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="coffeebus-soak-") as tmp:
        run = Soak(Path(tmp), args)
        tcp_port = free_port()
        try:
            print("soak: starting private Kafka, Redis, FerretDB and the CoffeeBus processes")
            clients, users = await run.start(tcp_port)
            driver = Driver(clients, users)
            await driver.warm_up()
            steps: list[dict[str, float | None]] = []
            capacity = args.capacity
            if capacity is None:
                print(f"soak: measuring capacity ({STEP_S:.0f} s steps)")
                capacity, steps = await run.capacity(driver)
                if capacity <= 0:
                    print("soak: no step held; capacity unknown", file=sys.stderr)
                    return 1
            rate = capacity / 2
            if steps:  # the last step overloaded the system on purpose: start from no lag
                await run.drained()
            print(f"soak: capacity {capacity:.1f} msg/s; {args.minutes:g} min at {rate:.1f} msg/s")
            await run.soak(driver, rate, args.minutes * 60)
            drain_s, projection_drain_s = await asyncio.gather(
                run.drained(), run.drained(groups=(PROJECTION,))
            )
            result = verdict(run.samples, drain_s, projection_drain_s)
            for client in clients:
                await client.close()
        finally:
            run.stop()
            await run.services.close()
        doc = {
            "minutes": args.minutes,
            "interval_s": args.interval,
            "pairs": args.pairs,
            "capacity_msg_per_s": capacity,
            "capacity_steps": steps,
            "rate_msg_per_s": rate,
            "acked": driver.acked,
            "failed_sends": driver.failed,
            "verdict": result,
            "error_lines": run.errors[:50],
            "samples": run.samples,
            "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"soak: samples and verdict in {args.out}")
        print(json.dumps(result, indent=1))
        for line in run.errors[:10]:
            print(f"  error: {line[:200]}")
        print("soak: PASS" if result["passed"] else "soak: FAIL")
        return 0 if result["passed"] else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    parser.add_argument(
        "--capacity", type=float, default=None, help="msg/s to halve (default: measure it)"
    )
    parser.add_argument("--pairs", type=int, default=10, help="pairs of clients (default 10)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(main(parse_args())))
