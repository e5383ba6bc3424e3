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
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

__all__ = [
    "CONNECTIONS",
    "CONNECTIONS_REFUSED",
    "DLQ_RECORDS",
    "FRAMES_IN",
    "FRAMES_OUT",
    "HANDLER_SECONDS",
    "LAG",
    "PUSHES",
    "RECORDS_CONSUMED",
    "RETRIES",
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
FRAMES_IN: Final = Counter(
    "coffeebus_gate_frames_received",
    "Frames received from clients, by command (``unknown``: not in the command table).",
    ["command"],
)
FRAMES_OUT: Final = Counter(
    "coffeebus_gate_frames_sent",
    "Frames queued for clients (responses, pushes, errors, heartbeats), by command.",
    ["command"],
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


class CommandCounters:
    """A counter's children bound once per command id, for the per-frame path.

    `names` maps every known command id to its name; any other id counts as ``unknown``, so
    a client sending random command ids cannot create series.
    """

    __slots__ = ("_by_id", "_unknown")

    def __init__(self, counter: Counter, names: Mapping[int, str]) -> None:
        self._by_id = {cmd: counter.labels(command=name) for cmd, name in names.items()}
        self._unknown = counter.labels(command="unknown")

    def inc(self, command_id: int) -> None:
        """Count one frame of `command_id`."""
        self._by_id.get(command_id, self._unknown).inc()


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
