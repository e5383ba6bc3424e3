"""Capacity planning from `make bench` figures: gates, members, partitions, Kafka, MongoDB, Redis.

    uv run python -m bench.capacity --online-users 1000000 --messages-per-s 10000
    uv run python -m bench.capacity --online-users 1000000 --messages-per-s 10000 \\
        --group-messages-per-s 200 --group-size 100 --results bench/results/latest.json

For N users online and M c2c messages a second (plus, optionally, group messages), it prints
the arithmetic of docs/operations.md, "Capacity planning", step by step: every figure it uses
is named by its key in bench/results/latest.json, so that the section can be redone whenever
`make bench` measures again. Figures the run lacks fall back to a stated other key (the
projection's write rate to the raw MongoDB bulk insert); quantities `make bench` does not
measure at all (bytes per Redis entry, per stored document) are assumptions, printed as such,
with a command-line option each.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.topology import Topology, load_topology
from coffeebus.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
LATEST = ROOT / "bench" / "results" / "latest.json"
#: The settings the Kubernetes deployment runs with (max_connections, heartbeats, [hot]).
K8S_SETTINGS = ROOT / "deploy" / "k8s" / "base" / "coffeebus.toml"

#: Share of a measured rate a process is planned to run at: room for spikes and one member
#: of each group lost (its partitions go to the others).
UTILISATION = 0.7
#: The gates' HPA target (deploy/k8s/base/gateway.yaml): connections per gate.
CONNECTIONS_PER_GATE = 10_000
#: Kafka partitions a broker carries comfortably (replicas counted), a common KRaft guide.
PARTITION_REPLICAS_PER_BROKER = 4_000
REPLICATION = 3  # topology.prod.yaml
MIN_REPLICAS = 2  # of every consumer group: no single member whose loss stops it
MIN_GATES = 3


class MissingFigureError(KeyError):
    """latest.json lacks a figure the arithmetic needs, and it has no fallback."""


def figure(raw: Mapping[str, Any], key: str) -> float:
    """The number at dotted `key` (``steps[-1]`` picks a list's last element)."""
    node: Any = raw
    for part in key.split("."):
        name, _, index = part.partition("[")
        if not isinstance(node, Mapping) or node.get(name) is None:
            raise MissingFigureError(key)
        node = node[name]
        if index:
            node = node[int(index.rstrip("]"))]
    if not isinstance(node, int | float):
        raise MissingFigureError(key)
    return float(node)


@dataclass(frozen=True)
class Figures:
    """The measured figures the plan uses, each with the key it was read from."""

    values: dict[str, float]
    keys: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> float:
        return self.values[name]


def top_step(raw: Mapping[str, Any]) -> int:
    """Index of the highest real-services c2c step that kept up."""
    steps = raw["scenarios"]["c2c_real"]["steps"]
    kept = [i for i, step in enumerate(steps) if step.get("keeps_up")]
    if not kept:
        raise MissingFigureError("scenarios.c2c_real.steps[*].keeps_up")
    return kept[-1]


def read_figures(raw: Mapping[str, Any]) -> Figures:
    """Every figure of the plan from a `make bench` result."""
    values: dict[str, float] = {}
    keys: dict[str, str] = {}
    notes: list[str] = []

    def take(name: str, key: str) -> float:
        values[name] = figure(raw, key)
        keys[name] = key
        return values[name]

    conn = "scenarios.connections_real"
    take("gate_rss_base_kib", f"{conn}.rss_before_kb")
    take("gate_kib_per_conn", f"{conn}.rss_slope_kb_per_conn")
    take("heartbeats_per_cpu_s", f"{conn}.heartbeats_per_gate_cpu_s")
    take("logins_per_s", f"{conn}.connects_per_s")
    take("held_per_gate", "scenarios.connections.idle_per_gate")
    take("c2c_per_s", "scenarios.c2c_real.max_delivered_per_s")
    i = top_step(raw)
    step = f"scenarios.c2c_real.steps[{i}]"
    step_s = take("step_s", "scenarios.c2c_real.step_s")
    delivered = take("step_delivered_per_s", f"{step}.delivered_per_s")
    take("cpu_us_per_msg", f"{step}.server_cpu_us_per_msg")
    for group in ("msg", "fanout", "ack"):
        calls = take(f"{group}_calls", f"{step}.server.handlers.{group}.calls")
        per_call = take(
            f"{group}_records_per_call", f"{step}.server.handlers.{group}.records_per_call"
        )
        # records one member handled a second, and per c2c message
        values[f"{group}_records_per_s"] = calls * per_call / step_s
        values[f"{group}_records_per_msg"] = values[f"{group}_records_per_s"] / delivered
    take("group_inbox_writes_per_s", "scenarios.group_real.inbox_writes_per_s")
    try:
        messages = take("projection_messages_per_s", "scenarios.c2c_real.projection.messages_per_s")
        inbox = take("projection_inbox_per_s", "scenarios.c2c_real.projection.inbox_entries_per_s")
        values["projection_docs_per_s"] = messages + inbox
    except MissingFigureError:
        take("projection_docs_per_s", "baselines.mongo_bulk_insert_per_s")
        notes.append(
            "this run has no projection write rate (scenarios.c2c_real.projection): one "
            "projection member is taken to write what one raw bulk insert did "
            "(baselines.mongo_bulk_insert_per_s)"
        )
    take("kafka_record_bytes", "baselines.kafka_record_bytes")
    return Figures(values, keys, notes)


@dataclass(frozen=True)
class Load:
    """What the deployment must carry."""

    online_users: int
    messages_per_s: float  # c2c
    group_messages_per_s: float = 0.0
    group_size: int = 0  # members of the average group a group message goes to
    group_online: float = 0.5  # share of a group's members online
    weekly_users: int = 0  # users active within [hot] idle_ttl_s; default 3 x online
    conversations_per_user: float = 10.0
    message_bytes: int = 200  # stored message (content + metadata), an assumption
    redis_node_gib: float = 32.0
    kafka_broker_disk_tb: float = 4.0


@dataclass
class Plan:
    """Every quantity, with the line of arithmetic that gave it."""

    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (what, value, how)
    values: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, what: str, value: float, how: str, digits: int = 0) -> float:
        self.values[name] = value
        shown = f"{value:,.{digits}f}"
        self.lines.append((what, shown, how))
        return value


def _ceil(x: float) -> int:
    return math.ceil(round(x, 6))


def partitions_for(members: int, shards: int) -> int:
    """Partitions for a group of `members`: twice the members (raising a count later re-maps
    keys), a multiple of [hot] shards, at least the single-node file's 16."""
    return max(16, shards * _ceil(2 * members / shards))


def plan(f: Figures, load: Load, topology: Topology, settings: Settings) -> Plan:
    """The arithmetic of docs/operations.md, "Capacity planning"."""
    p = Plan()
    u = UTILISATION
    gw = settings.gateway
    n, m = load.online_users, load.messages_per_s
    mg, size = load.group_messages_per_s, load.group_size

    # -- gates
    gates = p.add(
        "gates",
        "gates",
        max(MIN_GATES, _ceil(n / CONNECTIONS_PER_GATE)),
        f"max({MIN_GATES}, ceil(N {n:,} / {CONNECTIONS_PER_GATE:,} connections a gate))",
    )
    mib = (f["gate_rss_base_kib"] + gw.max_connections * f["gate_kib_per_conn"]) / 1024
    p.add(
        "gate_mib",
        "gate memory at max_connections, MiB",
        mib,
        f"(rss_before_kb {f['gate_rss_base_kib']:,.0f} + max_connections "
        f"{gw.max_connections:,} x rss_slope_kb_per_conn {f['gate_kib_per_conn']}) / 1024",
    )
    p.add(
        "gate_heartbeat_cores",
        "gate CPU for heartbeats, cores",
        CONNECTIONS_PER_GATE / gw.heartbeat_interval_s / f["heartbeats_per_cpu_s"],
        f"{CONNECTIONS_PER_GATE:,} / heartbeat_interval_s {gw.heartbeat_interval_s:.0f} / "
        f"heartbeats_per_gate_cpu_s {f['heartbeats_per_cpu_s']:,.0f}",
        digits=3,
    )
    p.add(
        "relogin_s",
        "seconds for one lost gate's clients to log in again",
        CONNECTIONS_PER_GATE / ((gates - 1) * f["logins_per_s"]),
        f"{CONNECTIONS_PER_GATE:,} / ((gates - 1) x connects_per_s {f['logins_per_s']:,.1f})",
        digits=1,
    )

    # -- consumer members (records a second each group must handle / what a member did)
    deliveries = mg * size * load.group_online
    msg_in = m * f["msg_records_per_msg"] + mg
    fan_in = m * f["fanout_records_per_msg"]
    ack_in = (m + deliveries) * f["ack_records_per_msg"]
    members: dict[str, int] = {}
    members["msg"] = int(
        p.add(
            "msg",
            "msg members",
            max(MIN_REPLICAS, _ceil(msg_in / (u * f["msg_records_per_s"]))),
            f"ceil((M x {f['msg_records_per_msg']:.2f} + group msgs {mg:,.0f}) / "
            f"({u} x {f['msg_records_per_s']:,.0f} records/s a member))",
        )
    )
    group_fan = mg * size / (u * f["group_inbox_writes_per_s"]) if mg else 0.0
    members["fanout"] = int(
        p.add(
            "fanout",
            "fanout members",
            max(MIN_REPLICAS, _ceil(fan_in / (u * f["fanout_records_per_s"]) + group_fan)),
            f"ceil(M x {f['fanout_records_per_msg']:.2f} / ({u} x "
            f"{f['fanout_records_per_s']:,.0f}) + group msgs {mg:,.0f} x size {size} / "
            f"({u} x inbox_writes_per_s {f['group_inbox_writes_per_s']:,.1f}))",
        )
    )
    members["ack"] = int(
        p.add(
            "ack",
            "ack members",
            max(MIN_REPLICAS, _ceil(ack_in / (u * f["ack_records_per_s"]))),
            f"ceil((M + group deliveries {deliveries:,.0f}) x {f['ack_records_per_msg']:.2f}"
            f" / ({u} x {f['ack_records_per_s']:,.0f}))",
        )
    )
    inbox_per_s = m * f["fanout_records_per_msg"] + mg * size
    docs = m + mg + inbox_per_s
    members["projection"] = int(
        p.add(
            "projection",
            "projection members",
            max(MIN_REPLICAS, _ceil(docs / (u * f["projection_docs_per_s"]))),
            f"ceil(documents/s {docs:,.0f} (messages + inbox entries) / ({u} x "
            f"{f['projection_docs_per_s']:,.0f}))",
        )
    )

    # -- partitions: the hot topics follow their group's members
    shards = settings.hot.shards
    hot = {
        "im.up.msg": "msg",
        "im.fanout": "fanout",
        "im.up.ack": "ack",
        "im.log.msg": "projection",
        "im.log.user": "projection",
        "im.timer": "fanout",
    }
    partitions: dict[str, int] = {}
    for topic, group in hot.items():
        partitions[topic] = max(
            topology.topic(topic).partitions, partitions_for(members[group], shards)
        )
    p.add(
        "partitions",
        "partitions of im.up.msg, im.fanout, im.up.ack, im.log.*, im.timer",
        max(partitions.values()),
        f"max(16, {shards} ([hot] shards) x ceil(2 x members / {shards})) of the largest "
        "group: " + ", ".join(f"{t} {v}" for t, v in partitions.items()),
    )

    # -- Kafka: bytes kept (retention x replication) and partition replicas
    record = f["kafka_record_bytes"]
    per_msg = {  # record-sized units a c2c message puts on each topic
        "im.up.msg": f["msg_records_per_msg"],
        "im.fanout": f["fanout_records_per_msg"],
        "im.up.ack": f["ack_records_per_msg"],
        "im.log.msg": 1.0,
        "im.log.user": f["fanout_records_per_msg"] + f["ack_records_per_msg"],
        "im.timer": f["fanout_records_per_msg"],
        "biz.events.message": 1.0 + f["ack_records_per_msg"],
    }
    written = sum(per_msg.values()) * (m + mg) * record
    p.add(
        "kafka_mb_s",
        "Kafka bytes in, MB/s (before replication)",
        written / 1e6,
        f"(M + group msgs) x {sum(per_msg.values()):.2f} records a message x "
        f"kafka_record_bytes {record:.0f}",
        digits=1,
    )
    kept = sum(
        share * (m + mg) * record * int(topology.topic(t).configs["retention.ms"]) / 1000
        for t, share in per_msg.items()
    )
    disk_tb = kept * REPLICATION / 1e12
    p.add(
        "kafka_disk_tb",
        "Kafka disk, TB (retention x 3 replicas)",
        disk_tb,
        "sum over topics of bytes/s x retention.ms (topology.yaml) x 3",
        digits=1,
    )
    replicas = REPLICATION * (
        sum(t.partitions for t in topology.topics.values())
        + sum(partitions[t] - topology.topic(t).partitions for t in partitions)
    )
    p.add(
        "kafka_brokers",
        "Kafka brokers",
        max(
            3,
            _ceil(disk_tb / (u * load.kafka_broker_disk_tb)),
            _ceil(replicas / PARTITION_REPLICAS_PER_BROKER),
        ),
        f"max(3, disk / ({u} x {load.kafka_broker_disk_tb:.0f} TB a broker), "
        f"{replicas:,} partition replicas / {PARTITION_REPLICAS_PER_BROKER:,})",
    )

    # -- MongoDB
    p.add(
        "mongo_shards",
        "MongoDB shards (each a 3-member replica set)",
        max(1, _ceil(docs / (u * f["projection_docs_per_s"]))),
        f"ceil(documents/s {docs:,.0f} / ({u} x {f['projection_docs_per_s']:,.0f} a primary))",
    )
    day = 86_400
    p.add(
        "mongo_gb_day",
        "MongoDB data a day, GB",
        ((m + mg) * load.message_bytes + inbox_per_s * 100) * day / 1e9,
        f"((M + group msgs) x {load.message_bytes} B + inbox entries/s {inbox_per_s:,.0f} "
        "x 100 B) x 86,400",
        digits=0,
    )

    # -- Redis: routes + hot state (windows kept for [hot] idle_ttl_s)
    hot_s = settings.hot
    weekly = load.weekly_users or 3 * n
    conversations = weekly * load.conversations_per_user / 2
    conv_entries = min((m + mg) * hot_s.idle_ttl_s, conversations * hot_s.conversation_window)
    inbox_entries = min(inbox_per_s * hot_s.idle_ttl_s, weekly * hot_s.inbox_window)
    redis_bytes = conv_entries * (load.message_bytes + 100) + inbox_entries * 100 + n * 300
    p.add(
        "redis_gib",
        "Redis memory, GiB",
        redis_bytes / 2**30,
        f"conversation entries {conv_entries:,.0f} x {load.message_bytes + 100} B + inbox "
        f"entries {inbox_entries:,.0f} x 100 B + N x 300 B (route, token)",
        digits=0,
    )
    p.add(
        "redis_masters",
        "Redis Cluster masters (each with a replica)",
        max(3, _ceil(redis_bytes / 2**30 / (u * load.redis_node_gib))),
        f"max(3, GiB / ({u} x {load.redis_node_gib:.0f} GiB a node))",
    )
    return p


def render(f: Figures, load: Load, p: Plan) -> str:
    """The plan as Markdown: the figures used, then every quantity with its arithmetic."""
    out = [
        f"Load: N = {load.online_users:,} online, M = {load.messages_per_s:,.0f} c2c msg/s, "
        f"{load.group_messages_per_s:,.0f} group msg/s to {load.group_size} members.",
        "",
        "| figure | value | key in latest.json |",
        "|---|---:|---|",
    ]
    out += [f"| {name} | {f[name]:,.2f} | `{key}` |" for name, key in f.keys.items()]
    out += ["", "| what | value | arithmetic |", "|---|---:|---|"]
    out += [f"| {what} | {value} | {how} |" for what, value, how in p.lines]
    out += [f"\nNote: {note}." for note in f.notes]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--online-users", type=int, required=True)
    parser.add_argument("--messages-per-s", type=float, required=True, help="c2c")
    parser.add_argument("--group-messages-per-s", type=float, default=0.0)
    parser.add_argument("--group-size", type=int, default=0)
    parser.add_argument("--weekly-users", type=int, default=0, help="default 3 x online")
    parser.add_argument("--message-bytes", type=int, default=200)
    parser.add_argument("--results", type=Path, default=LATEST)
    parser.add_argument("--config", type=Path, default=K8S_SETTINGS, help="settings (TOML)")
    args = parser.parse_args(argv)
    raw = json.loads(args.results.read_text())
    figures = read_figures(raw)
    load = Load(
        online_users=args.online_users,
        messages_per_s=args.messages_per_s,
        group_messages_per_s=args.group_messages_per_s,
        group_size=args.group_size,
        weekly_users=args.weekly_users,
        message_bytes=args.message_bytes,
    )
    print(f"Figures of the run started {raw.get('started_at')} ({raw.get('mode')} mode).\n")
    settings = load_settings(args.config, env={})
    print(render(figures, load, plan(figures, load, load_topology(), settings)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
