"""Every Prometheus metric of CoffeeBus, declared in one place (docs/observability.md).

Metrics live in `prometheus_client`'s default registry: one process, one set, exposed by
`telemetry.http` (gate and consumer processes) and by the HTTP API's ``/metrics``.

Cost on the hot path: label values are bound once — per command at import, per consumer
group and topic when a runner first sees them — so recording is one lookup and one
increment, with no allocation. Labels are bounded by construction: command names from the
command table (``unknown`` for anything else a client sends), consumer group ids and topics
from topology.yaml, providers and results from fixed sets. Never a user id or a connection
id: those belong in logs.

Consumer lag is not recorded at all on the hot path: `LagCollector` asks the running
consumers at scrape time (`LagReporter.lag`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Final, Protocol

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from schemas.commands import Cmd

__all__ = [
    "CONNECTIONS",
    "CONNECTIONS_REFUSED",
    "DLQ_RECORDS",
    "FRAMES_IN",
    "FRAMES_OUT",
    "HANDLER_SECONDS",
    "KICKED_BY_ADMIN",
    "LAG",
    "LOGINS",
    "PUSHES",
    "RECORDS_CONSUMED",
    "RETRIES",
    "ROOM_DELIVERIES",
    "ROOM_DROPPED_SLOW",
    "UPLINK_PUBLISH_FAILED",
    "WEBHOOKS",
    "CommandCounters",
    "LagCollector",
    "LagReporter",
]

# -- gate ----------------------------------------------------------------------------------

CONNECTIONS: Final = Gauge(
    "coffeebus_gate_connections",
    "Client connections open on this gate.",
    ["transport"],
)
CONNECTIONS_REFUSED: Final = Counter(
    "coffeebus_gate_connections_refused",
    "Connections refused because the gate was draining or full (max_connections).",
    ["transport"],
)
LOGINS: Final = Counter(
    "coffeebus_gate_logins",
    "Login requests by result: ok, failed (who-are-you), throttled (failed-login back-off), "
    "busy (password pool full), banned, error.",
    ["result"],
)
ROOM_DELIVERIES: Final = Counter(
    "coffeebus_gate_room_deliveries",
    "Room messages a gate wrote to its members' connections (read-diffusion fan-out).",
)
ROOM_DROPPED_SLOW: Final = Counter(
    "coffeebus_gate_room_dropped_slow",
    "Connections a gate dropped from a room because they did not read fast enough.",
)
KICKED_BY_ADMIN: Final = Counter(
    "coffeebus_gate_admin_kicks",
    "Connections closed by the server API's session administration (KickUser), by reason.",
    ["reason"],
)
UPLINK_PUBLISH_FAILED: Final = Counter(
    "coffeebus_gate_uplink_publish_failed",
    "Client frames the bus did not accept (answered ErrorRsp INTERNAL_ERROR), by topic.",
    ["topic"],
)

# -- consumers (bus.runner) ----------------------------------------------------------------

HANDLER_SECONDS: Final = Histogram(
    "coffeebus_handler_seconds",
    "Duration of one handler call on one partition's batch (each retry is a call).",
    ["group"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECORDS_CONSUMED: Final = Counter(
    "coffeebus_records_consumed",
    "Records handled (or dead-lettered) and so committable, by consumer group and topic.",
    ["group", "topic"],
)
RETRIES: Final = Counter(
    "coffeebus_handler_retries",
    "Handler calls repeated after a transient error (store or broker outage), by group and topic.",
    ["group", "topic"],
)
DLQ_RECORDS: Final = Counter(
    "coffeebus_dlq_records",
    "Records sent to <topic>.dlq because the handler rejected them, by group and topic.",
    ["group", "topic"],
)

# -- outcomes of the outside world ---------------------------------------------------------

WEBHOOKS: Final = Counter(
    "coffeebus_webhook_deliveries",
    "Business-event webhook POSTs, by subscriber (from settings) and result: delivered, "
    "retried (5xx, 429, timeout, connection error: tried again), dead_lettered (given up).",
    ["subscriber", "result"],
)
PUSHES: Final = Counter(
    "coffeebus_pushes",
    "Offline pushes to devices, by provider (apns, fcm, webhook) and result: sent, "
    "invalid_token (device removed), failed (after the provider's retries), skipped "
    "(provider not configured).",
    ["provider", "result"],
)


class CommandCounters(Collector):
    """A counter by command for the per-frame path: a plain integer per command id, read at
    scrape time (no lock per increment, as a `prometheus_client.Counter` child takes).

    `names` maps every known command id to its name; any other id counts as ``unknown``, so a
    client sending random command ids cannot create series. Increments come from the event
    loop's thread only; a scrape from another thread reads a value at most a frame old.
    """

    def __init__(self, name: str, documentation: str, names: Mapping[int, str]) -> None:
        self._name = name
        self._documentation = documentation
        self._names = dict(names)
        self._counts: dict[int, int] = dict.fromkeys(self._names, 0)
        self._counts[_UNKNOWN_COMMAND] = 0
        REGISTRY.register(self)

    def inc(self, command_id: int, amount: int = 1) -> None:
        """Count `amount` frames of `command_id`."""
        counts = self._counts
        if command_id in counts:
            counts[command_id] += amount
        else:
            counts[_UNKNOWN_COMMAND] += amount

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=["command"])
        for command_id, count in list(self._counts.items()):
            family.add_metric([self._names.get(command_id, "unknown")], count)
        yield family

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self._name, self._documentation, labels=["command"])]


# Not a 16-bit command id: where every id outside the command table is counted.
_UNKNOWN_COMMAND: Final = -1

#: Command ids and their names, for the per-command counters (`schemas.commands.Cmd`).
_COMMAND_NAMES: Final = {int(cmd): cmd.name for cmd in Cmd}

FRAMES_IN: Final = CommandCounters(
    "coffeebus_gate_frames_received",
    "Frames received from clients, by command (``unknown``: not in the command table).",
    _COMMAND_NAMES,
)
FRAMES_OUT: Final = CommandCounters(
    "coffeebus_gate_frames_sent",
    "Frames queued for clients (responses, pushes, errors, heartbeats), by command.",
    _COMMAND_NAMES,
)


# -- consumer lag --------------------------------------------------------------------------


class LagReporter(Protocol):
    """A running consumer that can tell how far behind it is (both buses' consumers)."""

    @property
    def group(self) -> str: ...

    def lag(self) -> Mapping[tuple[str, int], int]:
        """(topic, partition) -> records not yet handled, for the partitions it owns and
        knows the end of; computed without I/O."""
        ...


class LagCollector(Collector):
    """``coffeebus_consumer_lag{group, topic, partition}``, asked of the consumers at scrape.

    Consumers `track` themselves when they start and `untrack` when they close; they are
    held weakly, so a consumer dropped without closing is forgotten too.
    """

    def __init__(self) -> None:
        self._consumers: weakref.WeakSet[LagReporter] = weakref.WeakSet()

    def track(self, consumer: LagReporter) -> None:
        self._consumers.add(consumer)

    def untrack(self, consumer: LagReporter) -> None:
        self._consumers.discard(consumer)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "coffeebus_consumer_lag",
            "Records of a partition not yet handled by this process's member of the group "
            "(end of the partition minus the next offset to handle).",
            labels=["group", "topic", "partition"],
        )
        for consumer in list(self._consumers):
            for (topic, partition), lag in sorted(consumer.lag().items()):
                family.add_metric([consumer.group, topic, str(partition)], lag)
        yield family

    def describe(self) -> Iterable[Metric]:
        # Registering calls collect() unless describe() exists; nothing is tracked yet then.
        return ()


LAG: Final = LagCollector()
REGISTRY.register(LAG)
