"""`make bench`: every scenario on the embedded wiring and on the real services, in one run.

    uv run python -m bench.run                 # quick: a few minutes
    uv run python -m bench.run --mode full     # longer steps, bigger runs (make bench-full)
    uv run python -m bench.run --only c2c_embedded,baselines

Loopback only. The system under test runs in a process of its own (`bench._server`), on the
real services with the projection group in another (`bench._projection`, as it is
deployed); the load comes from SDK clients in `--workers` other processes (`bench._load`);
the connection scenario reuses `bench.conn_bench` (a gate process and its own load
processes). The raw baselines — aiokafka produce→consume of c2c-sized records, a bare
three-hop Kafka chain (`bench.kafka_chain`), PyMongo bulk inserts — run against the same
broker and server in the same run, and every real-services figure is also given as a ratio
to its baseline.

Writes bench/results/latest.json, then regenerates the plots and docs/benchmarks.md from it
(`bench.report`). The real services must be up (`make services-up`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from bench import conn_bench, kafka_chain, report, room_bench, scenarios
from bench.rig import START_TIMEOUT_S, STOP_TIMEOUT_S, Rig
from bench.scenarios import Ramp
from bench.stats import ratio
from bus.topology import load_topology
from coffeebus.settings import MessagingSettings, Settings, load_settings
from schemas.codes import GroupType
from store.mongo.client import connect_mongo

ROOT = Path(__file__).resolve().parent.parent
LATEST = ROOT / "bench" / "results" / "latest.json"
#: [messaging] group_max_members by default (the seed's 200).
DEFAULT_GROUP_MAX = MessagingSettings().group_max_members
SCENARIOS = (
    "c2c_embedded",
    "group_embedded",
    "pull_embedded",
    "c2c_real",
    "group_real",
    "pull_real",
    "connections",
    "connections_real",
    "rooms",
    "baselines",
)


@dataclass(frozen=True)
class Sizes:
    """What one mode runs on one kind of services, and how long each part may take."""

    ramp: Ramp
    #: (members, group type, messages) per group run
    groups: tuple[tuple[int, int, int], ...]
    #: (sessions, messages per session, request rounds)
    pull: tuple[int, int, int]
    connections: int
    #: The deadline of each part, in seconds: past it the part fails, its processes are
    #: killed and the run goes on. A group run has the group deadline each.
    c2c_s: float
    group_s: float
    pull_s: float
    connections_s: float


@dataclass(frozen=True)
class Plan:
    """The sizes of one mode."""

    embedded: Sizes
    real: Sizes
    heartbeat_s: float
    kafka_records: int
    mongo_documents: int
    baseline_s: float
    #: The bare three-hop Kafka chain's ramp (`bench.kafka_chain`) and its deadline.
    chain: kafka_chain.ChainRamp
    chain_s: float
    #: How long a real-services part waits, after its load, for the projection to catch
    #: up; added to the part's deadline.
    catch_up_s: float


#: The quick mode is meant to fit in about 8 minutes on a quiet 2-core machine. The real
#: services run the same group and pull sizes as the embedded wiring (the issue's: a
#: 1,000-member NORMAL group, 100 sessions x 100 messages): the message path no longer waits
#: on the document store. Their c2c ramp starts lower and waits longer for the drain.
PLANS = {
    "quick": Plan(
        embedded=Sizes(
            ramp=Ramp((100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000), 3.0, 5.0, 100),
            groups=((1000, GroupType.NORMAL, 10), (2000, GroupType.SUPER, 5)),
            pull=(100, 100, 50),
            connections=5_000,
            c2c_s=120,
            group_s=90,
            pull_s=120,
            connections_s=120,
        ),
        real=Sizes(
            ramp=Ramp((10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400), 3.0, 8.0, 20),
            groups=((1000, GroupType.NORMAL, 10), (2000, GroupType.SUPER, 5)),
            pull=(100, 100, 50),
            connections=1_000,
            c2c_s=150,
            group_s=180,
            pull_s=240,
            connections_s=120,
        ),
        heartbeat_s=5.0,
        kafka_records=50_000,
        mongo_documents=5_000,
        baseline_s=60,
        chain=kafka_chain.ChainRamp(
            (500, 1000, 2000, 4000, 8000, 12000, 16000, 24000, 32000), 3.0, 5.0
        ),
        chain_s=150,
        catch_up_s=120,
    ),
    "full": Plan(
        embedded=Sizes(
            ramp=Ramp(
                (100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000), 10.0, 10.0, 200
            ),
            groups=((1000, GroupType.NORMAL, 50), (2000, GroupType.SUPER, 20)),
            pull=(100, 100, 200),
            connections=20_000,
            c2c_s=600,
            group_s=600,
            pull_s=300,
            connections_s=900,
        ),
        real=Sizes(
            ramp=Ramp((10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400), 10.0, 20.0, 50),
            groups=((1000, GroupType.NORMAL, 5), (2000, GroupType.SUPER, 3)),
            pull=(100, 100, 200),
            connections=5_000,
            c2c_s=900,
            group_s=1800,
            pull_s=600,
            connections_s=900,
        ),
        heartbeat_s=10.0,
        kafka_records=200_000,
        mongo_documents=20_000,
        baseline_s=300,
        chain=kafka_chain.ChainRamp(
            (500, 1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 20000, 24000, 32000),
            10.0,
            10.0,
        ),
        chain_s=600,
        catch_up_s=600,
    ),
}


def machine(settings: Settings) -> dict[str, Any]:
    """`conn_bench.machine()` plus the versions of the services."""
    described = conn_bench.machine()
    pom = (ROOT / "services" / "kafka" / "pom.xml").read_text()
    found = re.search(r"<kafka.version>(.*?)</kafka.version>", pom)
    described["kafka"] = found.group(1) if found else None
    described["mongo_server"] = asyncio.run(_server_version(settings.mongo.url))
    described["loop"] = "uvloop (server and load workers)"
    return described


async def _server_version(url: str) -> str | None:
    client = connect_mongo(url, socket_timeout=10)
    try:
        info = await client.admin.command("buildInfo")
    except Exception:
        return None
    finally:
        await client.close()
    if info.get("ferretdbVersion"):
        return f"FerretDB {info['ferretdbVersion']} (reports MongoDB {info.get('version')})"
    return f"MongoDB {info.get('version')}"


class Rigs:
    """The system under test of one services run, shared by its parts; a part that fails
    takes its rig down with it (its server may still be busy with the failed request) and
    the next part starts a fresh one."""

    def __init__(self, services: str, group_max_members: int, log: RunLog) -> None:
        self.services = services
        self.group_max_members = group_max_members
        self._log = log
        self._rig: Rig | None = None

    async def get(self) -> Rig:
        """The running rig, started (within `bench.rig.START_TIMEOUT_S`) if there is none;
        its start-up time is logged as "start <services>"."""
        if self._rig is None:
            started = time.perf_counter()
            rig = Rig(self.services, workers=2, group_max_members=self.group_max_members)
            self._rig = await rig.__aenter__()
            name = f"start {self.services}"
            took = self._log.durations.get(name, 0.0) + time.perf_counter() - started
            self._log.durations[name] = round(took, 1)
        return self._rig

    async def close(self, *, abort: bool = False) -> None:
        rig, self._rig = self._rig, None
        if rig is not None:
            await rig.close(abort=abort)


async def services_run(
    services: str, plan: Plan, only: set[str], progress: Progress, log: RunLog
) -> dict[str, Any]:
    """c2c, group and pull on `services`; a part that fails or passes its deadline is
    recorded in the log and the next one runs."""
    sizes = plan.embedded if services == "embedded" else plan.real
    max_normal = max(
        (m for m, t, _ in sizes.groups if t == GroupType.NORMAL), default=DEFAULT_GROUP_MAX
    )
    out: dict[str, Any] = {}
    # A NORMAL group above [messaging] group_max_members (the seed's 200) is allowed by
    # raising the limit for the run; SUPER keeps its default limit (2,000).
    rigs = Rigs(services, max(max_normal, DEFAULT_GROUP_MAX), log)
    # Only the real services have a projection to wait for.
    catch_up_s = plan.catch_up_s if services == "real" else 0.0

    async def on_rig(
        name: str, deadline_s: float, part: Callable[[Rig], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        # Starting the system is not the part's time (its own deadline: `Rig.__aenter__`).
        rig = await rigs.get()
        result = await log.guarded(name, deadline_s + catch_up_s, lambda: part(rig))
        if name in log.errors:
            await rigs.close(abort=True)
        return result

    async def group_runs() -> dict[str, Any]:
        runs = []
        for members, kind, messages in sizes.groups:
            label = f"group {services} {members} {GroupType(kind).name}"
            run = await on_rig(
                label,
                sizes.group_s,
                functools.partial(
                    scenarios.group,
                    members=members,
                    group_type=kind,
                    messages=messages,
                    progress=progress,
                    label=label,
                    catch_up_s=catch_up_s,
                ),
            )
            if run:
                runs.append(run)
        if not runs:
            return {}
        first = runs[0]
        headline = {
            "runs": runs,
            # The headline is the first run's: the NORMAL group.
            "deliveries_per_s": first["deliveries_per_s"],
            "inbox_writes_per_s": first["inbox_writes_per_s"],
            "group_max_members": max(max_normal, DEFAULT_GROUP_MAX),
        }
        if "projection" in first:
            headline["projection"] = first["projection"]
        return headline

    sessions, per_session, rounds = sizes.pull
    try:
        name = f"c2c_{services}"
        if name in only:
            result = await on_rig(
                name,
                sizes.c2c_s,
                lambda rig: scenarios.c2c(
                    rig, sizes.ramp, progress, f"c2c {services}", catch_up_s=catch_up_s
                ),
            )
            if result:
                out[name] = result
        name = f"group_{services}"
        if name in only:
            started = time.perf_counter()
            result = await group_runs()
            log.durations[name] = round(time.perf_counter() - started, 1)
            if result:
                out[name] = result
        name = f"pull_{services}"
        if name in only:
            result = await on_rig(
                name,
                sizes.pull_s,
                lambda rig: scenarios.pull(
                    rig,
                    sessions,
                    per_session,
                    rounds,
                    progress=progress,
                    label=f"pull {services}",
                    catch_up_s=catch_up_s,
                ),
            )
            if result:
                out[name] = result
    finally:
        await rigs.close()
    return out


async def connections(services: str, count: int, heartbeat_s: float) -> dict[str, Any]:
    """`bench.conn_bench` on `services` (TCP), its figures and parameters."""
    args = conn_bench.parse(
        [
            "--connections",
            str(count),
            "--services",
            services,
            "--heartbeat-seconds",
            str(heartbeat_s),
        ]
    )
    procs = conn_bench.Procs()
    try:
        result = await conn_bench.bench(args, procs)
    finally:
        await asyncio.to_thread(conn_bench.stop, procs)
    params = result["parameters"]
    params.pop("command", None)
    return {**result["figures"], "parameters": params}


#: The room scenario by mode: (members, rates in msg/s, step s, deadline s per run). The
#: quick mode's room is what a gate holds comfortably on the 2-core box; the full mode's is
#: bounded by the open-files limit of one gate (20,000 there).
ROOMS: dict[str, tuple[int, str, float, float]] = {
    "quick": (5_000, "10,20,22,24,26,28,30,35,40", 5.0, 300.0),
    "full": (19_000, "2,5,10,15,20,25,30", 10.0, 900.0),
}


async def rooms(mode: str, gates: int) -> dict[str, Any]:
    """`bench.room_bench` on the real services with `gates` gate processes."""
    members, rates, step_s, _ = ROOMS[mode]
    args = room_bench.parse(
        [
            "--members",
            str(members),
            "--gates",
            str(gates),
            "--rates",
            rates,
            "--step-seconds",
            str(step_s),
        ]
    )
    procs = room_bench.Procs()
    try:
        result = await room_bench.bench(args, procs)
    finally:
        await asyncio.to_thread(room_bench.stop, procs)
    return {**result["figures"], "parameters": result["parameters"]}


def ratios(scen: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Every real-services throughput as a share of the baseline that bounds it."""
    c2c = scen.get("c2c_real", {})
    group = scen.get("group_real", {})
    kafka = base.get("kafka_roundtrip_per_s")
    mongo = base.get("mongo_bulk_insert_per_s")
    chain = base.get("kafka_chain_max_rate_p99_100ms")
    return {
        "c2c_real_vs_kafka": ratio(c2c.get("max_rate_p99_100ms"), kafka),
        "c2c_real_vs_kafka_chain": ratio(c2c.get("max_rate_p99_100ms"), chain),
        "c2c_real_delivered_vs_kafka": ratio(c2c.get("max_delivered_per_s"), kafka),
        "group_real_deliveries_vs_kafka": ratio(group.get("deliveries_per_s"), kafka),
        "group_real_inbox_writes_vs_mongo": ratio(group.get("inbox_writes_per_s"), mongo),
    }


@dataclass
class RunLog:
    """What went wrong in a run, and how long each part took."""

    errors: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)

    async def guarded(
        self, name: str, deadline_s: float, step: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """Run one part within `deadline_s`; a failure is recorded under its name and the
        run goes on."""
        started = time.perf_counter()
        limit = asyncio.timeout(deadline_s)
        try:
            async with limit:
                return await step()
        except TimeoutError as exc:
            if limit.expired():
                self.errors[name] = f"not done within its deadline of {deadline_s:g} s"
            else:
                self.errors[name] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
        finally:
            self.durations[name] = round(time.perf_counter() - started, 1)
        Console(stderr=True).print(f"[red]{name} failed:[/red] {self.errors[name]}")
        return {}


async def run(mode: str, only: set[str], command: str) -> dict[str, Any]:
    plan = PLANS[mode]
    settings = load_settings()
    started = time.time()
    scen: dict[str, Any] = {}
    base: dict[str, Any] = {}
    log = RunLog()
    console = Console(stderr=True)
    with Progress(console=console) as progress:
        for services, sizes in (("embedded", plan.embedded), ("real", plan.real)):
            if only & {f"{k}_{services}" for k in ("c2c", "group", "pull")}:
                # Every part has its own deadline; this one only bounds the (re)starts of the
                # system under test and the clean-up after.
                parts = 2 + len(sizes.groups)
                whole = sizes.c2c_s + len(sizes.groups) * sizes.group_s + sizes.pull_s
                whole += parts * (START_TIMEOUT_S + STOP_TIMEOUT_S)
                if services == "real":
                    whole += parts * plan.catch_up_s
                scen.update(
                    await log.guarded(
                        services,
                        whole,
                        functools.partial(services_run, services, plan, only, progress, log),
                    )
                )
                log.durations.pop(services, None)
        if "baselines" in only:
            bootstrap = settings.kafka.bootstrap_servers
            partitions = load_topology().topic("im.up.msg").partitions
            base.update(
                await log.guarded(
                    "baseline kafka",
                    plan.baseline_s,
                    lambda: scenarios.kafka_baseline(
                        bootstrap, plan.kafka_records, partitions, progress
                    ),
                )
            )
            base.update(
                await log.guarded(
                    "baseline kafka chain",
                    plan.chain_s,
                    lambda: kafka_chain.ramp(bootstrap, plan.chain, partitions, progress),
                )
            )
            base.update(
                await log.guarded(
                    "baseline mongo",
                    plan.baseline_s,
                    lambda: scenarios.mongo_baseline(
                        settings.mongo.url, plan.mongo_documents, progress
                    ),
                )
            )
    # conn_bench draws its own bars: outside the Progress above (one live display at a time).
    for name, services, sizes in (
        ("connections", "embedded", plan.embedded),
        ("connections_real", "real", plan.real),
    ):
        if name in only:
            measured = await log.guarded(
                name,
                sizes.connections_s,
                functools.partial(connections, services, sizes.connections, plan.heartbeat_s),
            )
            if measured:  # a failure is in the log's errors, not an empty scenario
                scen[name] = measured
    if "rooms" in only:
        deadline_s = ROOMS[mode][3]
        for name, gates in (("rooms", 1), ("rooms_two_gates", 2)):
            measured = await log.guarded(name, deadline_s, functools.partial(rooms, mode, gates))
            if measured:
                scen[name] = measured
    return {
        "schema": report.SCHEMA_VERSION,
        "mode": mode,
        "command": command,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "durations_s": log.durations,
        "scenarios": scen,
        "baselines": base,
        "ratios": ratios(scen, base),
        "errors": log.errors,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mode", choices=tuple(PLANS), default=os.environ.get("BENCH_MODE", "quick")
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}"
    )
    parser.add_argument("--output", type=Path, default=LATEST)
    parser.add_argument("--no-report", action="store_true", help="write the JSON only")
    parser.add_argument(
        "--mongo-url",
        help="the MongoDB-compatible server of the real-services parts (default: MONGO_URL, "
        "else the settings' default); every process of the run uses it",
    )
    args = parser.parse_args(argv)
    if args.mongo_url:
        # Read by `load_settings` here, in the spawned server and in the gate processes.
        os.environ["MONGO_URL"] = args.mongo_url
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    argv_shown = list(argv) if argv is not None else sys.argv[1:]
    command = shlex.join(["uv", "run", "python", "-m", "bench.run", *argv_shown])
    if "--mode" not in argv_shown:
        command += f"  # mode {args.mode}"
    described = machine(load_settings())
    result = asyncio.run(run(args.mode, only, command))
    result = {"machine": described, **result}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.output}", file=sys.stderr)
    if not args.no_report:
        report.generate(args.output)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
