"""`make bench`: every scenario on the embedded wiring and on the real services, in one run.

    uv run python -m bench.run                 # quick: a few minutes
    uv run python -m bench.run --mode full     # longer steps, bigger runs (make bench-full)
    uv run python -m bench.run --only c2c_embedded,baselines

Loopback only. The system under test runs in a process of its own (`bench._server`), the
load comes from SDK clients in `--workers` other processes (`bench._load`); the connection
scenario reuses `bench.conn_bench` (a gate process and its own load processes). The raw
baselines — aiokafka produce→consume of c2c-sized records, PyMongo bulk inserts — run
against the same broker and server in the same run, and every real-services figure is also
given as a ratio to its baseline.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from bench import conn_bench, report, scenarios
from bench.rig import Rig
from bench.scenarios import Ramp
from bench.stats import ratio
from bus.topology import load_topology
from coffeebus.settings import Settings
from schemas.codes import GroupType
from store.mongo import connect_mongo

ROOT = Path(__file__).resolve().parent.parent
LATEST = ROOT / "bench" / "results" / "latest.json"
SCENARIOS = (
    "c2c_embedded",
    "group_embedded",
    "pull_embedded",
    "c2c_real",
    "group_real",
    "pull_real",
    "connections",
    "connections_real",
    "baselines",
)


@dataclass(frozen=True)
class Plan:
    """The sizes of one mode."""

    ramp_embedded: Ramp
    ramp_real: Ramp
    #: (members, group type, messages) per group run
    groups_embedded: tuple[tuple[int, int, int], ...]
    groups_real: tuple[tuple[int, int, int], ...]
    pull_rounds: int
    connections: int
    connections_real: int
    heartbeat_s: float
    kafka_records: int
    mongo_documents: int


PLANS = {
    "quick": Plan(
        ramp_embedded=Ramp((100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000), 3.0, 5.0, 100),
        ramp_real=Ramp((10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400), 4.0, 10.0, 20),
        groups_embedded=((1000, GroupType.NORMAL, 10), (2000, GroupType.SUPER, 5)),
        groups_real=((1000, GroupType.NORMAL, 2), (2000, GroupType.SUPER, 1)),
        pull_rounds=50,
        connections=5_000,
        connections_real=1_000,
        heartbeat_s=5.0,
        kafka_records=50_000,
        mongo_documents=5_000,
    ),
    "full": Plan(
        ramp_embedded=Ramp(
            (100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000), 10.0, 10.0, 200
        ),
        ramp_real=Ramp((10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400), 10.0, 20.0, 50),
        groups_embedded=((1000, GroupType.NORMAL, 50), (2000, GroupType.SUPER, 20)),
        groups_real=((1000, GroupType.NORMAL, 5), (2000, GroupType.SUPER, 3)),
        pull_rounds=200,
        connections=20_000,
        connections_real=5_000,
        heartbeat_s=10.0,
        kafka_records=200_000,
        mongo_documents=20_000,
    ),
}
#: The pull scenario's user: 100 sessions and 10,000 messages (issue 7).
PULL_SESSIONS, PULL_PER_SESSION = 100, 100


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


async def services_run(
    services: str, plan: Plan, only: set[str], progress: Progress, errors: dict[str, str]
) -> dict[str, Any]:
    """c2c, group and pull on `services`, sharing one system under test; a scenario that
    fails is recorded in `errors` and the next one runs."""
    ramp = plan.ramp_embedded if services == "embedded" else plan.ramp_real
    groups = plan.groups_embedded if services == "embedded" else plan.groups_real
    max_normal = max(m for m, t, _ in groups if t == GroupType.NORMAL)
    out: dict[str, Any] = {}
    # The 1,000-member group is NORMAL: [messaging] group_max_members is raised to it for
    # the run (its default is the seed's 200); SUPER keeps its default limit (2,000).
    async with Rig(services, workers=2, group_max_members=max_normal) as rig:

        async def group_runs() -> dict[str, Any]:
            runs = []
            for members, kind, messages in groups:
                label = f"group {services} {members} {GroupType(kind).name}"
                run = await guarded(
                    label,
                    errors,
                    functools.partial(
                        scenarios.group,
                        rig,
                        members,
                        kind,
                        messages,
                        progress=progress,
                        label=label,
                    ),
                )
                if run:
                    runs.append(run)
            if not runs:
                return {}
            first = runs[0]
            return {
                "runs": runs,
                # The headline is the first run's: the 1,000-member group.
                "deliveries_per_s": first["deliveries_per_s"],
                "inbox_writes_per_s": first["inbox_writes_per_s"],
                "group_max_members": max_normal,
            }

        parts: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            f"c2c_{services}": lambda: scenarios.c2c(rig, ramp, progress, f"c2c {services}"),
            f"group_{services}": group_runs,
            f"pull_{services}": lambda: scenarios.pull(
                rig,
                PULL_SESSIONS,
                PULL_PER_SESSION,
                plan.pull_rounds,
                progress=progress,
                label=f"pull {services}",
            ),
        }
        for name, part in parts.items():
            if name in only:
                result = await guarded(name, errors, part)
                if result:
                    out[name] = result
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


def ratios(scen: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Every real-services throughput as a share of the baseline that bounds it."""
    c2c = scen.get("c2c_real", {})
    group = scen.get("group_real", {})
    kafka = base.get("kafka_roundtrip_per_s")
    mongo = base.get("mongo_bulk_insert_per_s")
    return {
        "c2c_real_vs_kafka": ratio(c2c.get("max_rate_p99_100ms"), kafka),
        "c2c_real_delivered_vs_kafka": ratio(c2c.get("max_delivered_per_s"), kafka),
        "group_real_deliveries_vs_kafka": ratio(group.get("deliveries_per_s"), kafka),
        "group_real_inbox_writes_vs_mongo": ratio(group.get("inbox_writes_per_s"), mongo),
    }


async def guarded(
    name: str, errors: dict[str, str], step: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Run one part; a failure is recorded under its name and the run goes on."""
    try:
        return await step()
    except Exception as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
        Console(stderr=True).print(f"[red]{name} failed:[/red] {errors[name]}")
        return {}


async def run(mode: str, only: set[str], command: str) -> dict[str, Any]:
    plan = PLANS[mode]
    settings = Settings()
    started = time.time()
    scen: dict[str, Any] = {}
    base: dict[str, Any] = {}
    errors: dict[str, str] = {}
    console = Console(stderr=True)
    with Progress(console=console) as progress:
        for services in ("embedded", "real"):
            if only & {f"{k}_{services}" for k in ("c2c", "group", "pull")}:
                scen.update(
                    await guarded(
                        services,
                        errors,
                        functools.partial(services_run, services, plan, only, progress, errors),
                    )
                )
        if "baselines" in only:
            bootstrap = settings.kafka.bootstrap_servers
            partitions = load_topology().topic("im.up.msg").partitions
            base.update(
                await guarded(
                    "baseline kafka",
                    errors,
                    lambda: scenarios.kafka_baseline(
                        bootstrap, plan.kafka_records, partitions, progress
                    ),
                )
            )
            base.update(
                await guarded(
                    "baseline mongo",
                    errors,
                    lambda: scenarios.mongo_baseline(
                        settings.mongo.url, plan.mongo_documents, progress
                    ),
                )
            )
    # conn_bench draws its own bars: outside the Progress above (one live display at a time).
    for name, services, count in (
        ("connections", "embedded", plan.connections),
        ("connections_real", "real", plan.connections_real),
    ):
        if name in only:
            measured = await guarded(
                name, errors, functools.partial(connections, services, count, plan.heartbeat_s)
            )
            if measured:  # a failure is in `errors`, not an empty scenario
                scen[name] = measured
    return {
        "schema": report.SCHEMA_VERSION,
        "mode": mode,
        "command": command,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "scenarios": scen,
        "baselines": base,
        "ratios": ratios(scen, base),
        "errors": errors,
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
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    argv_shown = list(argv) if argv is not None else sys.argv[1:]
    command = shlex.join(["uv", "run", "python", "-m", "bench.run", *argv_shown])
    if "--mode" not in argv_shown:
        command += f"  # mode {args.mode}"
    described = machine(Settings())
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
