"""bench/results/latest.json → PNG plots and docs/benchmarks.md.

    uv run python -m bench.report [bench/results/latest.json]

The JSON is checked against the schema below (msgspec structs: a wrong type or a missing
field of a present scenario is an error; `REQUIRED` lists the figures the issue asks every
full run to have). docs/benchmarks.md is rendered from the template
bench/benchmarks.md.in: each ``<!-- bench:NAME -->`` line is replaced by the generated block
NAME, everything else — the hand-written analysis — is kept as written.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "bench" / "benchmarks.md.in"
DOC = ROOT / "docs" / "benchmarks.md"
SCHEMA_VERSION = 1
#: Dotted paths every complete run has (issues 7 and 13). A projection that did not catch up
#: within its wait has no ``caught_up_s``: named here as missing.
REQUIRED = (
    "scenarios.c2c_real.max_rate_p99_100ms",
    "scenarios.c2c_embedded.max_rate_p99_100ms",
    "scenarios.group_real.deliveries_per_s",
    "scenarios.connections.idle_per_gate",
    "scenarios.connections.rss_kb_per_conn",
    "baselines.kafka_roundtrip_per_s",
    "ratios.c2c_real_vs_kafka",
    "scenarios.group_real.group_max_members",
    "scenarios.pull_real.sessions",
    "scenarios.pull_real.messages",
    "scenarios.pull_real.session_list_ms.p99",
    "scenarios.pull_real.history_page_ms.p99",
    "scenarios.c2c_real.projection.caught_up_s",
    "scenarios.group_real.projection.inbox_entries_per_s",
    "scenarios.pull_real.projection.caught_up_s",
    "baselines.kafka_chain_max_rate_p99_100ms",
    "baselines.kafka_chain_saturation_per_s",
)
LATENCY_PLOT = "c2c_latency.png"
GROUP_PLOT = "group_deliveries.png"

Num = float | None


class Latency(msgspec.Struct, frozen=True):
    p50: Num
    p99: Num
    p999: Num
    max: Num


class GcPauses(msgspec.Struct, frozen=True):
    count: int
    total: float
    max: float


class HandlerBatches(msgspec.Struct, frozen=True):
    calls: int
    records_per_call: float
    ms_per_call: float


class MongoCommands(msgspec.Struct, frozen=True):
    count: int
    ms: Latency
    total_s: float


class ServerLoad(msgspec.Struct, frozen=True):
    """The system under test's CPU, handler batches, Mongo commands, loop lag and GC pauses
    in a step."""

    cpu_s: float
    handlers: dict[str, HandlerBatches]
    loop_lag_ms: Latency
    gc_pause_ms: dict[str, GcPauses]
    #: Absent from runs before it was recorded.
    mongo: dict[str, MongoCommands] = msgspec.field(default_factory=dict)


class Projection(msgspec.Struct, frozen=True):
    """The projection process during one real-services scenario (`bench.projection`).

    Lag is in log records (each holds one handler batch of messages or inbox entries), from
    the cluster: the log ends minus the group's committed offsets."""

    #: The highest lag sampled during the scenario, and the last one sampled.
    max_lag: int | None
    end_lag: int | None
    #: Seconds from the end of the load until the lag was 0 with everything written; None:
    #: not within `catch_up_limit_s`.
    caught_up_s: Num
    #: Seconds from the start of the load until it caught up (or the wait ended).
    window_s: float
    #: What it wrote in that window, and per second of it.
    messages: int
    inbox_entries: int
    messages_per_s: Num
    inbox_entries_per_s: Num
    #: The projection process's CPU seconds in the window.
    cpu_s: float
    lag_samples: int
    catch_up_limit_s: float


class C2CStep(msgspec.Struct, frozen=True):
    offered_per_s: float
    sent_per_s: float
    acked_per_s: float
    delivered_per_s: float
    sent: int
    acked: int
    delivered: int
    failed: int
    send_ack_ms: Latency
    send_deliver_ms: Latency
    keeps_up: bool
    server: ServerLoad | None = None
    server_cpu_us_per_msg: Num = None
    #: The whole machine's part (`bench.rig.Rig.cpu_seconds`); absent in older results.
    cpu_us_per_msg: Num = None
    cpu_s: dict[str, float] | None = None
    #: The projection's highest lag in the step (real services).
    projection_max_lag: int | None = None


class C2C(msgspec.Struct, frozen=True):
    pairs: int
    step_s: float
    drain_s: float
    workers: int
    steps: list[C2CStep]
    max_rate_p99_100ms: float
    max_delivered_per_s: float
    fell_behind_at: Num
    projection: Projection | None = None


class GroupRun(msgspec.Struct, frozen=True):
    members: int
    group_type: str
    online: int
    messages: int
    deliveries: int
    expected_deliveries: int
    deliveries_per_s: float
    inbox_writes: int
    inbox_writes_per_s: Num
    send_ack_ms: Latency
    to_last_online_ms: Latency
    projection: Projection | None = None
    #: CPU seconds per part of the system from the first send to the last arrival
    #: (`bench.rig.Rig.cpu_seconds`); absent in results older than this field.
    cpu_s: dict[str, float] | None = None
    cpu_us_per_delivery: Num = None


class Group(msgspec.Struct, frozen=True):
    runs: list[GroupRun]
    deliveries_per_s: float
    inbox_writes_per_s: Num
    group_max_members: int
    #: The first run's (the headline's).
    projection: Projection | None = None


class FirstRead(msgspec.Struct, frozen=True):
    """The reader's first, unmeasured session list: what it listed and how long it took."""

    ms: float
    sessions: int
    unread: int


class Pull(msgspec.Struct, frozen=True):
    sessions: int
    messages: int
    rounds: int
    session_list_ms: Latency
    history_page_ms: Latency
    history_page_size: int
    #: Runs before the messages were sent through the gate wrote them into the stores.
    seed_s: Num = None
    #: From the first send to the last ack, and the rate of that.
    send_s: Num = None
    sent_per_s: Num = None
    #: Sends answered with an error (the messages may be stored all the same).
    send_failed: int | None = None
    send_ack_ms: Latency | None = None
    #: From the first send until the reader's inbox held every message.
    inbox_complete_s: Num = None
    first_session_list: FirstRead | None = None
    projection: Projection | None = None


class Connections(msgspec.Struct, frozen=True):
    idle_per_gate: int
    rss_kb_per_conn: float
    heartbeats_per_s: Num
    heartbeat_rtt_p50_ms: Num
    heartbeat_rtt_p99_ms: Num
    heartbeats_per_gate_cpu_s: Num
    connects_per_s: float
    failed: int
    parameters: dict[str, Any]


class RoomStep(msgspec.Struct, frozen=True):
    rate_in: float
    messages_in_per_s: float
    deliveries_per_s: float
    delivered_share: Num
    p50_ms: Num
    p99_ms: Num
    gate_cpu_us_per_delivery: Num
    gate_cpu_share: float
    samples: int


class Rooms(msgspec.Struct, frozen=True):
    """One `bench.room_bench` run: a room, its members on one or two gates."""

    members: int
    gates: int
    max_deliveries_per_s_p99: Num
    messages_in_per_s: Num
    p99_ms: Num
    p50_ms: Num
    gate_cpu_us_per_delivery: Num
    dropped_slow: int
    join_failed: int
    join_s: float
    refused_sends: int
    steps: list[RoomStep]
    parameters: dict[str, Any]


class Scenarios(msgspec.Struct, frozen=True):
    c2c_embedded: C2C | None = None
    c2c_real: C2C | None = None
    group_embedded: Group | None = None
    group_real: Group | None = None
    pull_embedded: Pull | None = None
    pull_real: Pull | None = None
    connections: Connections | None = None
    connections_real: Connections | None = None
    rooms: Rooms | None = None
    rooms_two_gates: Rooms | None = None


class ChainStep(msgspec.Struct, frozen=True):
    offered_per_s: float
    sent_per_s: float
    delivered_per_s: float
    sent: int
    delivered: int
    end_to_end_ms: Latency
    keeps_up: bool


class KafkaChain(msgspec.Struct, frozen=True):
    """The bare three-hop chain's parameters and ramp (`bench.kafka_chain`)."""

    hops: int
    record_bytes: int
    partitions: int
    linger_ms: float
    fetch_max_wait_ms: float
    batch_max: int
    step_s: float
    drain_s: float
    steps: list[ChainStep]


class Baselines(msgspec.Struct, frozen=True):
    kafka_roundtrip_per_s: Num = None
    kafka_publish_per_s: Num = None
    kafka_records: int | None = None
    kafka_record_bytes: int | None = None
    kafka_partitions: int | None = None
    mongo_bulk_insert_per_s: Num = None
    mongo_documents: int | None = None
    mongo_batch: int | None = None
    kafka_chain_max_rate_p99_100ms: Num = None
    kafka_chain_saturation_per_s: Num = None
    kafka_chain: KafkaChain | None = None


class Ratios(msgspec.Struct, frozen=True):
    c2c_real_vs_kafka: Num
    c2c_real_delivered_vs_kafka: Num
    group_real_deliveries_vs_kafka: Num
    group_real_inbox_writes_vs_mongo: Num
    c2c_real_vs_kafka_chain: Num = None


class Machine(msgspec.Struct, frozen=True):
    cpu: str
    cores: int
    ram_gib: float
    python: str
    kernel: str
    nofile_hard_limit: int
    kafka: str | None
    mongo_server: str | None
    loop: str


class Result(msgspec.Struct, frozen=True):
    schema: int
    machine: Machine
    mode: str
    command: str
    started_at: str
    duration_s: float
    load_average: list[float]
    scenarios: Scenarios
    baselines: Baselines
    ratios: Ratios
    errors: dict[str, str]
    #: Wall seconds of each part (absent from runs before it was recorded).
    durations_s: dict[str, float] = msgspec.field(default_factory=dict)


def load(path: Path) -> tuple[Result, dict[str, Any]]:
    """The result at `path`, checked (`msgspec.ValidationError` if malformed), and its raw
    JSON."""
    raw = msgspec.json.decode(path.read_bytes())
    return msgspec.convert(raw, Result), raw


def missing(raw: Mapping[str, Any]) -> list[str]:
    """The `REQUIRED` paths that are absent or null in `raw`."""
    absent = []
    for path in REQUIRED:
        node: Any = raw
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            absent.append(path)
    return absent


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


# --- plots -----------------------------------------------------------------------------------


def plot(result: Result, out_dir: Path) -> list[str]:
    """Write the PNG plots for `result` into `out_dir`; their file names."""
    import matplotlib  # noqa: PLC0415 - imported late: the Agg backend must be chosen first

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = []
    s = result.scenarios
    c2c_runs = [(n, r) for n, r in (("embedded", s.c2c_embedded), ("real", s.c2c_real)) if r]
    if c2c_runs:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, run in c2c_runs:
            rates = [st.offered_per_s for st in run.steps]
            for q, style in (("p50", "--"), ("p99", "-")):
                values = [_nan(getattr(st.send_deliver_ms, q)) for st in run.steps]
                ax.plot(rates, values, style, marker="o", label=f"{name} send→deliver {q}")
        ax.axhline(100, color="grey", linewidth=0.8, linestyle=":", label="100 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered c2c rate (messages/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title("c2c latency vs offered rate")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / LATENCY_PLOT, dpi=100)
        plt.close(fig)
        written.append(LATENCY_PLOT)
    group_runs = [(n, g) for n, g in (("embedded", s.group_embedded), ("real", s.group_real)) if g]
    if group_runs:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, g in group_runs:
            sizes = [r.members for r in g.runs]
            ax.plot(
                sizes,
                [r.deliveries_per_s for r in g.runs],
                marker="o",
                label=f"{name} deliveries/s",
            )
            # A run whose inboxes did not complete has no rate: plotted as a gap.
            writes = [_nan(r.inbox_writes_per_s) for r in g.runs]
            ax.plot(sizes, writes, "--", marker="s", label=f"{name} inbox writes/s")
        ax.set_yscale("log")
        ax.set_xlabel("group members (half online)")
        ax.set_ylabel("per second")
        ax.set_title("group fan-out vs group size")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / GROUP_PLOT, dpi=100)
        plt.close(fig)
        written.append(GROUP_PLOT)
    return written


# --- markdown ------------------------------------------------------------------------------


def fmt(value: float | int | None, digits: int = 0) -> str:
    """A number with thousands separators, "-" for None."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    align = ["---" if i == 0 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def block_run(result: Result, raw: Mapping[str, Any]) -> str:
    m = result.machine
    lines = [
        "```sh",
        result.command,
        "```",
        "",
        f"Mode **{result.mode}**, started {result.started_at}, took {fmt(result.duration_s)} s; "
        f"load average at the end {', '.join(f'{x:.2f}' for x in result.load_average)}.",
        "",
        f"Machine: {m.cpu}, {m.cores} cores, {m.ram_gib} GiB RAM, Linux {m.kernel}, "
        f"Python {m.python}, {m.loop}; Kafka {m.kafka or '?'} (one KRaft broker), "
        f"{m.mongo_server or 'MongoDB-compatible server ?'}, Redis — all on this machine, on "
        f"loopback; open-files hard limit {fmt(m.nofile_hard_limit)}.",
    ]
    if result.durations_s:
        parts = ", ".join(f"{name} {fmt(s)} s" for name, s in result.durations_s.items())
        lines += ["", f"Wall time per part: {parts}."]
    spliced = raw.get("spliced") or {}
    if spliced:
        lines += [
            "",
            "Taken from a separate run after this one: "
            + "; ".join(f"`{key}` ({why})" for key, why in spliced.items())
            + ".",
        ]
    absent = missing(raw)
    if absent:
        lines += ["", "Figures missing from this run: " + ", ".join(f"`{p}`" for p in absent) + "."]
    if result.errors:
        lines += ["", "Parts that failed in this run:", ""]
        lines += [f"- `{k}`: {v}" for k, v in result.errors.items()]
    return "\n".join(lines)


def _get(obj: object, name: str) -> Any:
    """`obj.name`, or None when the scenario is absent."""
    return None if obj is None else getattr(obj, name)


def block_summary(result: Result, raw: Mapping[str, Any]) -> str:
    s, b, r = result.scenarios, result.baselines, result.ratios
    rows = [
        [
            "c2c, embedded: highest rate with p99 ≤ 100 ms",
            fmt(_get(s.c2c_embedded, "max_rate_p99_100ms")),
            "≥ 4,000/s",
            "≥ 20,000/s",
        ],
        [
            "c2c, real services: highest rate with p99 ≤ 100 ms",
            fmt(_get(s.c2c_real, "max_rate_p99_100ms")),
            "≥ 1,000/s",
            "≥ 5,000/s",
        ],
        [
            "c2c, real services: highest delivered rate that kept up",
            fmt(_get(s.c2c_real, "max_delivered_per_s")),
            "≥ 3,000/s",
            "",
        ],
        ["c2c real / raw Kafka round trip", pct(r.c2c_real_vs_kafka), "", "≥ 40 %"],
        [
            f"group deliveries/s, embedded ({_headline_group(s.group_embedded)})",
            fmt(_get(s.group_embedded, "deliveries_per_s")),
            "",
            "≥ 50,000/s",
        ],
        [
            f"group deliveries/s, real services ({_headline_group(s.group_real)})",
            fmt(_get(s.group_real, "deliveries_per_s")),
            "≥ 20,000/s",
            "≥ 50,000/s",
        ],
        [
            f"session list p99 ms, real services ({_pull_size(s.pull_real)})",
            fmt(_get(_get(s.pull_real, "session_list_ms"), "p99"), 1),
            "≤ 50 ms",
            "",
        ],
        [
            "history page (20) p99 ms, real services",
            fmt(_get(_get(s.pull_real, "history_page_ms"), "p99"), 1),
            "≤ 20 ms",
            "",
        ],
        *(
            [f"projection, {name} real: {PROJECTION_BRIEF}", _projection_brief(p), "", ""]
            for name, p in (
                ("c2c", _get(s.c2c_real, "projection")),
                ("group", _get(s.group_real, "projection")),
                ("pull", _get(s.pull_real, "projection")),
            )
        ),
        [
            "idle connections held by one gate",
            fmt(_get(s.connections, "idle_per_gate")),
            "",
            "≥ 50,000",
        ],
        ["KiB per idle connection", fmt(_get(s.connections, "rss_kb_per_conn"), 2), "", "≤ 15"],
        ["raw Kafka produce→consume, records/s", fmt(b.kafka_roundtrip_per_s), "", ""],
        [
            "bare three-hop Kafka chain: highest rate with p99 ≤ 100 ms / saturation, records/s",
            f"{fmt(b.kafka_chain_max_rate_p99_100ms)} / {fmt(b.kafka_chain_saturation_per_s)}",
            "",
            "",
        ],
        ["raw PyMongo bulk insert, documents/s", fmt(b.mongo_bulk_insert_per_s), "", ""],
    ]
    return table(["figure", "measured", "aim (issue 13)", "aim (issue 7)"], rows)


#: What `_projection_brief` shows.
PROJECTION_BRIEF = "highest lag (records) / caught up after the load / inbox entries written/s"


def _projection_brief(p: Projection | None) -> str:
    if p is None:
        return "-"
    caught = f"{fmt(p.caught_up_s, 1)} s" if p.caught_up_s is not None else "**not**"
    return f"{fmt(p.max_lag)} / {caught} / {fmt(p.inbox_entries_per_s)}"


def _pull_size(pull: Pull | None) -> str:
    if pull is None:
        return "not measured"
    return f"{fmt(pull.sessions)} sessions, {fmt(pull.messages)} messages"


def projection_line(p: Projection | None) -> str:
    """One sentence on the projection during a real-services scenario."""
    if p is None:
        return "**Projection**: not measured in this run."
    if p.caught_up_s is not None:
        caught = f"caught up **{fmt(p.caught_up_s, 1)} s** after the load"
    else:
        caught = (
            f"**not caught up** within {fmt(p.catch_up_limit_s)} s after the load "
            f"(lag {fmt(p.end_lag)} at the end)"
        )
    return (
        f"**Projection** (its own process): highest lag **{fmt(p.max_lag)} records**, "
        f"{caught}; it wrote {fmt(p.messages)} messages ({fmt(p.messages_per_s)}/s) and "
        f"{fmt(p.inbox_entries)} inbox entries ({fmt(p.inbox_entries_per_s)}/s) in the "
        f"{fmt(p.window_s, 1)} s from the start of the load, using {fmt(p.cpu_s, 1)} CPU s."
    )


def _headline_group(group: Group | None) -> str:
    """The group a group headline is measured on (its first run)."""
    if group is None or not group.runs:
        return "not measured"
    first = group.runs[0]
    return f"{fmt(first.members)} members, {first.group_type}"


def _c2c_table(run: C2C) -> str:
    rows = [
        [
            fmt(st.offered_per_s),
            fmt(st.sent_per_s),
            fmt(st.acked_per_s),
            fmt(st.delivered_per_s),
            " / ".join(fmt(getattr(st.send_ack_ms, q), 1) for q in ("p50", "p99", "p999")),
            " / ".join(fmt(getattr(st.send_deliver_ms, q), 1) for q in ("p50", "p99", "p999")),
            "yes" if st.keeps_up else "**no**",
        ]
        for st in run.steps
    ]
    head = [
        "offered/s",
        "sent/s",
        "acked/s",
        "delivered/s",
        "send→ack p50/p99/p999 ms",
        "send→deliver p50/p99/p999 ms",
        "keeps up",
    ]
    if any(st.projection_max_lag is not None for st in run.steps):
        head.append("projection max lag")
        for row, st in zip(rows, run.steps, strict=True):
            row.append(fmt(st.projection_max_lag))
    text = (
        f"{run.pairs} sender→receiver pairs over {run.workers} load processes, "
        f"{fmt(run.step_s, 1)} s per step, {fmt(run.drain_s, 1)} s drain. "
        "**Highest rate with p99 ≤ 100 ms: "
        f"{fmt(run.max_rate_p99_100ms)} msg/s**; highest delivered rate that kept up: "
        f"{fmt(run.max_delivered_per_s)} msg/s.\n\n" + table(head, rows)
    )
    if run.projection is not None:
        text += "\n\n" + projection_line(run.projection)
    servers = [st for st in run.steps if st.server is not None]
    if not servers:
        return text
    return text + "\n\nWhere the server's time went in each step:\n\n" + _server_table(servers)


#: The consumer groups whose handler times the c2c server table shows.
C2C_GROUPS = ("msg", "fanout", "ack")


def _server_table(steps: Sequence[C2CStep]) -> str:
    """Per step: the server's CPU per message, each group's handler time per call (and
    records per call), and the Mongo commands that took the most time."""
    rows = []
    machine = any(st.cpu_us_per_msg is not None for st in steps)
    for st in steps:
        assert st.server is not None
        handlers = [st.server.handlers.get(g) for g in C2C_GROUPS]
        mongo = sorted(st.server.mongo.items(), key=lambda kv: -kv[1].total_s)[:3]
        rows.append(
            [
                fmt(st.offered_per_s),
                fmt(st.server_cpu_us_per_msg),
                *([_cpu_cell(st.cpu_us_per_msg, st.cpu_s, st.acked)] if machine else []),
                *(
                    f"{fmt(h.ms_per_call, 1)} ({fmt(h.records_per_call, 1)})" if h else ""
                    for h in handlers
                ),
                ", ".join(
                    f"{name} {fmt(c.count)}: {fmt(c.ms.p50, 1)} / {fmt(c.ms.p99, 1)}"
                    for name, c in mongo
                )
                or "none",
                " / ".join(fmt(getattr(st.server.loop_lag_ms, q), 1) for q in ("p50", "p99")),
            ]
        )
    head = [
        "offered/s",
        "server CPU µs/msg",
        *(["machine CPU µs/msg (largest parts)"] if machine else []),
        *(f"{g} ms/call (records/call)" for g in C2C_GROUPS),
        "Mongo commands: count: p50 / p99 ms (most time first)",
        "loop lag p50/p99 ms",
    ]
    return table(head, rows)


def _cpu_cell(total: Num, parts: Mapping[str, float] | None, count: int) -> str:
    """Total CPU µs per message and its three largest parts, e.g. "812 (kafka 301, …)"."""
    if total is None or not parts or not count:
        return "-"
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    return f"{fmt(total)} (" + ", ".join(f"{k} {fmt(v * 1e6 / count)}" for k, v in top) + ")"


def block_c2c(result: Result, raw: Mapping[str, Any]) -> str:
    parts = []
    for name, run in (
        ("Embedded", result.scenarios.c2c_embedded),
        ("Real services", result.scenarios.c2c_real),
    ):
        parts.append(f"**{name}.** " + (_c2c_table(run) if run else "not measured in this run."))
    if result.scenarios.c2c_embedded or result.scenarios.c2c_real:
        parts.append(f"![c2c latency vs offered rate](../bench/results/{LATENCY_PLOT})")
    return "\n\n".join(parts)


def block_group(result: Result, raw: Mapping[str, Any]) -> str:
    rows = []
    for name, g in (
        ("embedded", result.scenarios.group_embedded),
        ("real", result.scenarios.group_real),
    ):
        for run in g.runs if g else []:
            rows.append(
                [
                    name,
                    f"{fmt(run.members)} {run.group_type}",
                    fmt(run.online),
                    fmt(run.messages),
                    f"{fmt(run.deliveries)} / {fmt(run.expected_deliveries)}",
                    fmt(run.deliveries_per_s),
                    fmt(run.inbox_writes_per_s),
                    f"{fmt(run.to_last_online_ms.p50, 1)} / {fmt(run.to_last_online_ms.max, 1)}",
                    *_projection_cells(run.projection),
                ]
            )
    if not rows:
        return "Not measured in this run."
    head = [
        "services",
        "group",
        "online",
        "messages",
        "deliveries",
        "deliveries/s",
        "inbox writes/s",
        "to last online member p50 / max ms",
        "projection inbox writes/s",
        "projection max lag",
        "projection caught up in s",
    ]
    return (
        table(head, rows)
        + "\n\n"
        + PROJECTION_NOTE
        + _group_cpu(result)
        + f"\n\n![deliveries vs group size](../bench/results/{GROUP_PLOT})"
    )


def _group_cpu(result: Result) -> str:
    """Where the machine's CPU went during each burst, per delivery."""
    runs = [
        (name, run)
        for name, g in (
            ("embedded", result.scenarios.group_embedded),
            ("real", result.scenarios.group_real),
        )
        for run in (g.runs if g else [])
        if run.cpu_s is not None
    ]
    if not runs:
        return ""
    parts = sorted({part for _, run in runs for part in run.cpu_s or {}})
    rows = [
        [
            name,
            f"{fmt(run.members)} {run.group_type}",
            fmt(run.cpu_us_per_delivery),
            *(
                fmt((run.cpu_s or {}).get(part, 0.0) * 1e6 / run.deliveries)
                if run.deliveries
                else "-"
                for part in parts
            ),
        ]
        for name, run in runs
    ]
    head = ["services", "group", "CPU µs / delivery", *(f"{part} µs" for part in parts)]
    return (
        "\n\nWhere the machine's CPU went from the first send to the last arrival, per "
        "delivery (CPU seconds of each part — this run's server, projection and load "
        "processes, and the services' processes — over the deliveries; two cores give "
        "2,000,000 µs a second, so 20,000 deliveries/s leave 100 µs for everything):\n\n"
        + table(head, rows)
    )


#: Under every table with projection columns.
PROJECTION_NOTE = (
    "Projection columns: the projection process of the real-services runs — its inbox "
    "entries written per second from the first send until it caught up, its highest lag in "
    "log records, and the seconds from the end of the load until its lag was 0 "
    '("not" if it had not within its wait). The embedded runs have no projection process: '
    "in memory the timeline stores are the document store already."
)


def _projection_cells(p: Projection | None) -> list[str]:
    if p is None:
        return ["", "", ""]
    caught = fmt(p.caught_up_s, 1) if p.caught_up_s is not None else "**not**"
    return [fmt(p.inbox_entries_per_s), fmt(p.max_lag), caught]


def block_pull(result: Result, raw: Mapping[str, Any]) -> str:
    rows = []
    lines = []
    for name, p in (
        ("embedded", result.scenarios.pull_embedded),
        ("real", result.scenarios.pull_real),
    ):
        if not p:
            continue
        if p.send_s is not None:
            sent = f"{fmt(p.send_s, 1)} ({fmt(p.sent_per_s)}/s)"
            if p.send_failed:
                sent += f", {fmt(p.send_failed)} failed"
        else:
            sent = f"seeded in {fmt(p.seed_s, 1)}"
        first = p.first_session_list
        rows.append(
            [
                name,
                f"{fmt(p.sessions)} / {fmt(p.messages)}",
                sent,
                fmt(p.inbox_complete_s, 1),
                (
                    f"{fmt(first.ms, 1)} ({fmt(first.sessions)} / {fmt(first.unread)})"
                    if first
                    else "-"
                ),
                fmt(p.rounds),
                " / ".join(fmt(getattr(p.session_list_ms, q), 1) for q in ("p50", "p99", "max")),
                " / ".join(fmt(getattr(p.history_page_ms, q), 1) for q in ("p50", "p99", "max")),
                *_projection_cells(p.projection)[1:],
            ]
        )
        if name == "real" and p.send_s is not None:
            lines.append(projection_line(p.projection))
    if not rows:
        return "Not measured in this run."
    head = [
        "services",
        "sessions / messages",
        "sent in s (msg/s)",
        "inbox complete at s",
        "first session list ms, unmeasured (sessions / unread)",
        "requests",
        "session list p50/p99/max ms",
        "history page (20) p50/p99/max ms",
        "projection max lag",
        "projection caught up in s",
    ]
    return "\n\n".join([table(head, rows), *lines, PULL_NOTE])


PULL_NOTE = (
    "Each peer sent its messages to the reader through the gate, one at a time, each acked, "
    "while the reader was offline; once the reader's inbox held them all (and, on the real "
    "services, the projection had caught up) the reader logged in. Its first session list "
    "is not in the percentiles: a user's first read after its hot state was created merges "
    'the document store\'s state in, once (docs/architecture.md, "Completeness"). The '
    "embedded runs have no projection process: in memory the timeline stores are the "
    "document store already."
)


def block_connections(result: Result, raw: Mapping[str, Any]) -> str:
    rows = []
    for name, c in (
        ("embedded", result.scenarios.connections),
        ("real", result.scenarios.connections_real),
    ):
        if c:
            p = c.parameters
            rows.append(
                [
                    name,
                    f"{fmt(p.get('requested_connections'))} → {fmt(p.get('target_connections'))}",
                    fmt(c.idle_per_gate),
                    fmt(c.rss_kb_per_conn, 2),
                    fmt(c.connects_per_s),
                    f"{fmt(c.heartbeats_per_s)} ({fmt(c.heartbeat_rtt_p50_ms, 1)} / "
                    f"{fmt(c.heartbeat_rtt_p99_ms, 1)})",
                    fmt(c.heartbeats_per_gate_cpu_s),
                    fmt(p.get("gate_open_files_limit")),
                ]
            )
    if not rows:
        return "Not measured in this run."
    head = [
        "services",
        "asked → target",
        "held by the gate",
        "KiB / connection",
        "connects/s",
        "heartbeats/s (p50 / p99 ms)",
        "heartbeats per gate CPU s",
        "gate's open-files limit",
    ]
    return table(head, rows)


def block_rooms(result: Result, raw: Mapping[str, Any]) -> str:
    runs = [r for r in (result.scenarios.rooms, result.scenarios.rooms_two_gates) if r]
    if not runs:
        return "Not measured in this run."
    head = [
        "gates",
        "members",
        "messages in/s",
        "deliveries/s (p99 ≤ limit)",
        "send→deliver p50 / p99 ms",
        "gate CPU µs / delivery",
        "dropped (slow)",
    ]
    rows = [
        [
            fmt(r.gates),
            fmt(r.members),
            fmt(r.messages_in_per_s, 1),
            fmt(r.max_deliveries_per_s_p99),
            f"{fmt(r.p50_ms, 1)} / {fmt(r.p99_ms, 1)}",
            fmt(r.gate_cpu_us_per_delivery, 2),
            fmt(r.dropped_slow),
        ]
        for r in runs
    ]
    out = [table(head, rows)]
    for r in runs:
        steps = [
            [
                fmt(st.rate_in, 1),
                fmt(st.deliveries_per_s),
                pct(st.delivered_share),
                f"{fmt(st.p50_ms, 1)} / {fmt(st.p99_ms, 1)}",
                fmt(st.gate_cpu_us_per_delivery, 2),
                pct(st.gate_cpu_share),
            ]
            for st in r.steps
        ]
        out.append(f"\nThe ramp on {r.gates} gate(s), {fmt(r.members)} members:\n")
        out.append(
            table(
                [
                    "msg in/s",
                    "deliveries/s",
                    "delivered",
                    "p50 / p99 ms",
                    "gate CPU µs / delivery",
                    "gate CPU",
                ],
                steps,
            )
        )
    return "\n".join(out)


def block_baselines(result: Result, raw: Mapping[str, Any]) -> str:
    b, r = result.baselines, result.ratios
    rows = [
        [
            "raw aiokafka produce→consume",
            f"{fmt(b.kafka_records)} records of {fmt(b.kafka_record_bytes)} B, "
            f"{fmt(b.kafka_partitions)} partitions",
            f"{fmt(b.kafka_roundtrip_per_s)} records/s (publish {fmt(b.kafka_publish_per_s)}/s)",
        ],
        [
            "bare three-hop Kafka chain (aiokafka, a process per stage)",
            _chain_work(b.kafka_chain),
            f"p99 ≤ 100 ms up to {fmt(b.kafka_chain_max_rate_p99_100ms)} records/s; "
            f"saturates at {fmt(b.kafka_chain_saturation_per_s)} records/s",
        ],
        [
            "raw PyMongo insert_many",
            f"{fmt(b.mongo_documents)} documents, {fmt(b.mongo_batch)} per call",
            f"{fmt(b.mongo_bulk_insert_per_s)} documents/s",
        ],
    ]
    ratio_rows = [
        ["c2c real (highest rate, p99 ≤ 100 ms) / Kafka round trip", pct(r.c2c_real_vs_kafka)],
        [
            "c2c real (highest rate, p99 ≤ 100 ms) / Kafka chain (highest rate, p99 ≤ 100 ms)",
            pct(r.c2c_real_vs_kafka_chain),
        ],
        [
            "c2c real (highest delivered rate that kept up) / Kafka round trip",
            pct(r.c2c_real_delivered_vs_kafka),
        ],
        ["group deliveries/s real / Kafka round trip", pct(r.group_real_deliveries_vs_kafka)],
        [
            "group inbox writes/s real / PyMongo bulk insert",
            pct(r.group_real_inbox_writes_vs_mongo),
        ],
    ]
    parts = [table(["baseline", "work", "rate"], rows)]
    if b.kafka_chain is not None:
        parts.append(_chain_table(b.kafka_chain))
    parts.append(table(["ratio", "value"], ratio_rows))
    return "\n\n".join(parts)


def _chain_work(chain: KafkaChain | None) -> str:
    if chain is None:
        return "not measured in this run"
    return (
        f"source → relay → relay → sink, {fmt(chain.record_bytes)} B records, acks=all, "
        f"a commit per batch of ≤ {fmt(chain.batch_max)}, {fmt(chain.partitions)} partitions, "
        f"linger {fmt(chain.linger_ms)} ms; {fmt(chain.step_s, 1)} s steps"
    )


def _chain_table(chain: KafkaChain) -> str:
    rows = [
        [
            fmt(st.offered_per_s),
            fmt(st.sent_per_s),
            fmt(st.delivered_per_s),
            " / ".join(fmt(getattr(st.end_to_end_ms, q), 1) for q in ("p50", "p99", "max")),
            "yes" if st.keeps_up else "**no**",
        ]
        for st in chain.steps
    ]
    head = ["offered/s", "sent/s", "delivered/s", "end to end p50/p99/max ms", "keeps up"]
    return "The chain's ramp (delivered/s: first to last arrival of the step):\n\n" + table(
        head, rows
    )


BLOCKS: dict[str, Callable[[Result, Mapping[str, Any]], str]] = {
    "run": block_run,
    "summary": block_summary,
    "c2c": block_c2c,
    "group": block_group,
    "pull": block_pull,
    "connections": block_connections,
    "rooms": block_rooms,
    "baselines": block_baselines,
}
MARKER = "<!-- bench:"


def render(template: str, result: Result, raw: Mapping[str, Any]) -> str:
    """`template` with every ``<!-- bench:NAME -->`` line replaced by block NAME."""
    out = []
    for line in template.splitlines():
        stripped = line.strip()
        if stripped.startswith(MARKER) and stripped.endswith("-->"):
            name = stripped[len(MARKER) : -3].strip()
            if name not in BLOCKS:
                raise ValueError(f"unknown block {name!r} in the template; known: {sorted(BLOCKS)}")
            out.append(BLOCKS[name](result, raw))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def generate(
    json_path: Path, *, template: Path = TEMPLATE, doc: Path = DOC, plots_dir: Path | None = None
) -> Path:
    """Check `json_path`, write its plots beside it (or into `plots_dir`) and `doc`."""
    result, raw = load(json_path)
    plot(result, plots_dir or json_path.parent)
    doc.write_text(render(template.read_text(), result, raw))
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0]) if args else ROOT / "bench" / "results" / "latest.json"
    print(f"written {generate(path)}")


if __name__ == "__main__":
    main()
