"""Apply the declared topology to a Kafka cluster, show drift, and measure consumer lag.

Three operations on aiokafka's admin client, each opening and closing its own connection:

- `apply(topology, bootstrap)` creates missing topics with their configs, raises partition
  counts that are too low, and sets configs that differ. It is idempotent: a second run finds
  nothing to do. What Kafka cannot change in place (fewer partitions, another replication
  factor) is reported as an action of kind `cannot-fix`, never attempted.
- `show(topology, bootstrap)` compares declared and actual topics, row by row.
- `lag(topology, bootstrap)` gives each group's committed offset, log end offset and lag per
  partition, with the member that owns the partition.
- `forget(bootstrap, groups=..., topics=...)` deletes consumer groups that have no members
  and topics (`groups_and_gates` lists the candidates): what short-lived users of a
  cluster — test runs, benchmark runs, a gate that is gone for good — leave behind. Kafka
  keeps an empty group's offsets (and a template topic such as ``im.gate.<id>``) until told
  otherwise: the test broker had gathered tens of thousands of them (docs/benchmarks.md).

Configs are set with AlterConfigs and the *full* declared set: aiokafka 0.14 has no
IncrementalAlterConfigs, and AlterConfigs replaces a topic's dynamic configs as a whole. That
matches topology.yaml being the source of truth — a config set by hand on a declared topic is
reset by `apply` (and `show` lists it as drift first).

Errors: `ClusterUnreachableError` when no broker answers within the timeout, `AdminError`
when the cluster refuses a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.structs import TopicPartition

from bus.topology import TopicSpec, Topology

__all__ = [
    "Action",
    "AdminError",
    "ClusterTopic",
    "ClusterUnreachableError",
    "ConfigDrift",
    "GroupLag",
    "PartitionLag",
    "ShowReport",
    "TopicLag",
    "TopicRow",
    "apply",
    "apply_topics",
    "forget",
    "groups_and_gates",
    "lag",
    "show",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 10.0
_CLIENT_ID: Final = "coffeebus-admin"
# DescribeConfigs config_source: set on the topic itself (not inherited from the broker).
_DYNAMIC_TOPIC_CONFIG: Final = 1
_UNKNOWN_TOPIC: Final = 3
_TOPIC_ALREADY_EXISTS: Final = 36


class AdminError(Exception):
    """The cluster refused an admin request; the message names the topic and Kafka's error."""


class ClusterUnreachableError(AdminError):
    """No broker of the bootstrap list answered in time."""


ActionKind = Literal["create", "add-partitions", "alter-configs", "cannot-fix"]


class Action(msgspec.Struct, frozen=True, kw_only=True):
    """One change `apply` made, or drift it cannot make go away (kind `cannot-fix`)."""

    kind: ActionKind
    topic: str
    detail: str


class ClusterTopic(msgspec.Struct, frozen=True, kw_only=True):
    """A topic as the cluster has it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    """Every config value the broker reports for the topic (defaults included)."""
    overrides: frozenset[str]
    """Names of the configs set on the topic itself (dynamic topic configs)."""
    ready: bool
    """Every partition has a leader (a topic just created may not, for a moment)."""


class ConfigDrift(msgspec.Struct, frozen=True, kw_only=True):
    """A config whose value on the cluster differs from the declared one."""

    name: str
    declared: str | None
    """None: set on the cluster but not declared (apply removes it)."""
    actual: str | None


RowStatus = Literal["ok", "missing", "drift", "undeclared"]


class TopicRow(msgspec.Struct, frozen=True, kw_only=True):
    """One topic of `show`: declared vs cluster."""

    topic: str
    status: RowStatus
    declared_partitions: int | None
    partitions: int | None
    declared_replication_factor: int | None
    replication_factor: int | None
    configs: tuple[ConfigDrift, ...] = ()

    @property
    def drift(self) -> bool:
        return self.status != "ok"


class ShowReport(msgspec.Struct, frozen=True, kw_only=True):
    """Declared topics and undeclared ones in the declared namespaces, plus what was skipped."""

    rows: tuple[TopicRow, ...]
    template_instances: dict[str, tuple[str, ...]]
    """Template name -> cluster topics that are its instances (e.g. live and dead gates)."""
    foreign: tuple[str, ...]
    """Cluster topics outside the declared namespaces (other applications'); not drift."""

    @property
    def drift(self) -> bool:
        return any(row.drift for row in self.rows)


class PartitionLag(msgspec.Struct, frozen=True, kw_only=True):
    """Where one group stands on one partition."""

    topic: str
    partition: int
    committed: int | None
    """None: the group never committed here; lag then counts from the log start."""
    end: int
    lag: int
    owner: str | None
    """client_id@host of the member assigned the partition, when the group is live."""


class TopicLag(msgspec.Struct, frozen=True, kw_only=True):
    """One group's lag on one topic, summed over its partitions."""

    topic: str
    partitions: int
    committed_partitions: int
    """Partitions where the group has a committed offset (0: it never committed here)."""
    lag: int
    max_lag: int
    max_lag_partition: int | None
    """The partition furthest behind; None when no partition lags."""


class GroupLag(msgspec.Struct, frozen=True, kw_only=True):
    """One consumer group's lag over every partition of its topics."""

    group: str
    group_id: str
    state: str
    members: int
    partitions: tuple[PartitionLag, ...]

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def never_committed(self) -> bool:
        """No committed offset on any partition: its lag counts from the log start."""
        return all(p.committed is None for p in self.partitions)

    def topics(self) -> tuple[TopicLag, ...]:
        """Per topic of the group (in the order of its partitions): total and maximum lag."""
        by_topic: dict[str, list[PartitionLag]] = {}
        for p in self.partitions:
            by_topic.setdefault(p.topic, []).append(p)
        summaries = []
        for topic, rows in by_topic.items():
            # The lowest partition wins a tie, so the answer does not depend on the order.
            worst = max(rows, key=lambda p: (p.lag, -p.partition))
            summaries.append(
                TopicLag(
                    topic=topic,
                    partitions=len(rows),
                    committed_partitions=sum(p.committed is not None for p in rows),
                    lag=sum(p.lag for p in rows),
                    max_lag=worst.lag,
                    max_lag_partition=worst.partition if worst.lag else None,
                )
            )
        return tuple(summaries)


# --- connection ----------------------------------------------------------------------------


@asynccontextmanager
async def _connect(bootstrap: str, request_timeout: float) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=_CLIENT_ID,
        request_timeout_ms=int(request_timeout * 1000),
    )
    try:
        async with asyncio.timeout(request_timeout):
            await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        raise ClusterUnreachableError(
            f"Kafka is not reachable at {bootstrap}: no broker accepted a connection"
        ) from exc
    except TimeoutError as exc:
        await admin.close()
        raise ClusterUnreachableError(
            f"Kafka is not reachable at {bootstrap}: no answer within {request_timeout:g} s"
        ) from exc
    try:
        yield admin
    except KafkaConnectionError as exc:
        raise ClusterUnreachableError(
            f"lost the connection to Kafka at {bootstrap}: {exc}"
        ) from exc
    except KafkaError as exc:
        raise AdminError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        await admin.close()


def _check(code: int, what: str, message: str | None = None) -> None:
    if code:
        error = for_code(code)
        raise AdminError(f"{what}: {error.__name__}" + (f" ({message})" if message else ""))


# --- forgetting what is gone ---------------------------------------------------------------

#: Kafka's error codes `forget` takes as "nothing to delete": the group is not there
#: (GROUP_ID_NOT_FOUND) or still has members (NON_EMPTY_GROUP: someone uses it).
_GROUP_ID_NOT_FOUND: Final = 69
_NON_EMPTY_GROUP: Final = 68
#: Groups per DeleteGroups request.
_DELETE_BATCH: Final = 500


async def groups_and_gates(
    topology: Topology, bootstrap: str, *, request_timeout: float = DEFAULT_TIMEOUT
) -> tuple[set[str], set[str]]:
    """Every consumer group id on the cluster, and its topics that are instances of the
    ``gate`` template (``im.gate.<id>``): what `forget` may be given."""
    gate = topology.template("gate")
    async with _connect(bootstrap, request_timeout) as admin:
        groups = {group for group, _ in await admin.list_consumer_groups()}
        gates = {topic for topic in await admin.list_topics() if gate.matches(topic)}
    return groups, gates


async def forget(
    bootstrap: str,
    *,
    groups: Iterable[str] = (),
    topics: Iterable[str] = (),
    request_timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Delete `groups` that have no members, and `topics`; the number of groups deleted.

    A group with members, or one that does not exist, is left as it is; so is a topic that
    does not exist. Each group is deleted by its coordinator (a cluster has several)."""
    names = list(dict.fromkeys(groups))
    doomed = list(dict.fromkeys(topics))
    deleted = 0
    async with _connect(bootstrap, request_timeout) as admin:
        by_coordinator: dict[int, list[str]] = {}
        for name in names:
            by_coordinator.setdefault(await admin.find_coordinator(name), []).append(name)
        for node, owned in by_coordinator.items():
            for first in range(0, len(owned), _DELETE_BATCH):
                request = DeleteGroupsRequest(owned[first : first + _DELETE_BATCH])
                response = await admin._send_request_to_node(node, request)
                for name, code in response.results:
                    if code in (_GROUP_ID_NOT_FOUND, _NON_EMPTY_GROUP):
                        continue
                    _check(code, f"deleting group {name}")
                    deleted += 1
        if doomed:
            existing = set(await admin.list_topics())
            present = [t for t in doomed if t in existing]
            if present:
                await admin.delete_topics(present)
    return deleted


# --- reading the cluster -------------------------------------------------------------------


async def _describe(admin: Any, names: Iterable[str] | None) -> dict[str, ClusterTopic]:
    """Topics that exist (of `names`, or all) with partitions, replication and configs."""
    metadata = await admin.describe_topics(list(names) if names is not None else None)
    layout: dict[str, tuple[int, int, bool]] = {}
    for topic in metadata:
        if topic["error_code"] == _UNKNOWN_TOPIC:
            continue
        _check(topic["error_code"], f"describe topic {topic['topic']}")
        partitions = topic["partitions"]
        rf = max((len(p["replicas"]) for p in partitions), default=0)
        ready = bool(partitions) and all(
            p["error_code"] == 0 and p["leader"] >= 0 for p in partitions
        )
        layout[topic["topic"]] = (len(partitions), rf, ready)
    if not layout:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in layout]
    configs: dict[str, tuple[dict[str, str], frozenset[str]]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            name = resource["resource_name"]
            if resource["error_code"] == _UNKNOWN_TOPIC:
                # The broker asked does not know a topic created a moment ago yet (on a
                # cluster, metadata reaches each broker in its own time): as absent as a topic
                # the metadata does not name, so `_settle` waits and asks again.
                del layout[name]
                continue
            _check(resource["error_code"], f"describe configs of {name}", resource["error_message"])
            values: dict[str, str] = {}
            overrides: set[str] = set()
            for entry in resource["config_entries"]:
                values[entry["config_names"]] = entry["config_value"]
                # v0 says is_default, v1+ gives the source of the value.
                source = entry.get("config_source")
                if source == _DYNAMIC_TOPIC_CONFIG or (source is None and not entry["is_default"]):
                    overrides.add(entry["config_names"])
            configs[name] = (values, frozenset(overrides))
    return {
        name: ClusterTopic(
            name=name,
            partitions=partitions,
            replication_factor=rf,
            configs=configs.get(name, ({}, frozenset()))[0],
            overrides=configs.get(name, ({}, frozenset()))[1],
            ready=ready,
        )
        for name, (partitions, rf, ready) in layout.items()
    }


def _same_value(name: str, declared: str, actual: str | None) -> bool:
    if actual is None:
        return False
    if name == "cleanup.policy":  # a list: "compact,delete" == "delete,compact"
        return {p.strip() for p in declared.split(",")} == {p.strip() for p in actual.split(",")}
    return declared == actual


def _config_drift(spec: TopicSpec, actual: ClusterTopic) -> tuple[ConfigDrift, ...]:
    drift = [
        ConfigDrift(name=name, declared=value, actual=actual.configs.get(name))
        for name, value in sorted(spec.configs.items())
        if not _same_value(name, value, actual.configs.get(name))
    ]
    drift += [
        ConfigDrift(name=name, declared=None, actual=actual.configs.get(name))
        for name in sorted(actual.overrides - spec.configs.keys())
    ]
    return tuple(drift)


# --- apply ---------------------------------------------------------------------------------


async def apply(
    topology: Topology, bootstrap: str, *, request_timeout: float = DEFAULT_TIMEOUT
) -> list[Action]:
    """Make the cluster match every declared topic; returns what was done, in order."""
    return await apply_topics(topology.topics.values(), bootstrap, request_timeout=request_timeout)


async def apply_topics(
    specs: Iterable[TopicSpec], bootstrap: str, *, request_timeout: float = DEFAULT_TIMEOUT
) -> list[Action]:
    """`apply` for chosen topics — e.g. a gate creating `topology.gate_topic(gate_id)`."""
    wanted = {spec.name: spec for spec in specs}
    actions: list[Action] = []
    async with _connect(bootstrap, request_timeout) as admin:
        existing = await _describe(admin, wanted)
        missing = [spec for name, spec in wanted.items() if name not in existing]
        if missing:
            actions += await _create(admin, missing, request_timeout)
        grow: dict[str, NewPartitions] = {}
        alter: list[ConfigResource] = []
        for name, actual in existing.items():
            spec = wanted[name]
            if actual.partitions < spec.partitions:
                grow[name] = NewPartitions(total_count=spec.partitions)
                actions.append(
                    Action(
                        kind="add-partitions",
                        topic=name,
                        detail=f"partitions {actual.partitions} -> {spec.partitions}",
                    )
                )
            elif actual.partitions > spec.partitions:
                actions.append(
                    Action(
                        kind="cannot-fix",
                        topic=name,
                        detail=f"has {actual.partitions} partitions, declared "
                        f"{spec.partitions}: Kafka cannot remove partitions",
                    )
                )
            if actual.replication_factor != spec.replication_factor:
                actions.append(
                    Action(
                        kind="cannot-fix",
                        topic=name,
                        detail=f"replication factor {actual.replication_factor}, declared "
                        f"{spec.replication_factor}: needs a partition reassignment",
                    )
                )
            drift = _config_drift(spec, actual)
            if drift:
                alter.append(ConfigResource(ConfigResourceType.TOPIC, name, dict(spec.configs)))
                actions.append(
                    Action(kind="alter-configs", topic=name, detail=_describe_drift(drift))
                )
        if grow:
            try:
                await admin.create_partitions(grow, timeout_ms=int(request_timeout * 1000))
            except KafkaError as exc:
                raise AdminError(f"raise partitions of {', '.join(grow)}: {exc}") from exc
        if alter:
            for response in await admin.alter_configs(alter):
                for resource in response.to_object()["resources"]:
                    _check(
                        resource["error_code"],
                        f"alter configs of {resource['resource_name']}",
                        resource["error_message"],
                    )
        changed = {a.topic for a in actions if a.kind != "cannot-fix"}
        await _settle(admin, [wanted[name] for name in sorted(changed)], request_timeout)
    for action in actions:
        log.info("topology %s %s: %s", action.kind, action.topic, action.detail)
    return actions


async def _create(admin: Any, specs: Sequence[TopicSpec], request_timeout: float) -> list[Action]:
    response = await admin.create_topics(
        [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=spec.replication_factor,
                topic_configs=dict(spec.configs),
            )
            for spec in specs
        ],
        timeout_ms=int(request_timeout * 1000),
    )
    created: list[str] = []
    for error in response.to_object()["topic_errors"]:
        # Another `apply` (or a starting gate) may have won the race; that is fine.
        if error["error_code"] != _TOPIC_ALREADY_EXISTS:
            _check(
                error["error_code"], f"create topic {error['topic']}", error.get("error_message")
            )
            created.append(error["topic"])
    return [
        Action(
            kind="create",
            topic=spec.name,
            detail=f"partitions {spec.partitions}, replication {spec.replication_factor}",
        )
        for spec in specs
        if spec.name in created
    ]


async def _settle(admin: Any, specs: Sequence[TopicSpec], request_timeout: float) -> None:
    """Wait until the cluster serves what was just changed, so the next call sees it.

    CreateTopics, CreatePartitions and AlterConfigs return once the controller has committed
    the change; the brokers' metadata follows a moment later. Without this wait an immediate
    second `apply` (or a producer) would see the old state.
    """
    pending = {spec.name: spec for spec in specs}
    delay = 0.02
    try:
        async with asyncio.timeout(request_timeout):
            while pending:
                for name, actual in (await _describe(admin, pending)).items():
                    spec = pending[name]
                    done = actual.ready and actual.partitions >= spec.partitions
                    if done and not _config_drift(spec, actual):
                        del pending[name]
                if pending:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
    except TimeoutError:
        raise AdminError(
            f"the cluster did not show the changes to {', '.join(sorted(pending))} "
            f"within {request_timeout:g} s"
        ) from None


def _describe_drift(drift: Sequence[ConfigDrift]) -> str:
    return ", ".join(
        f"{d.name} {d.actual} -> {d.declared}" if d.declared is not None else f"{d.name} unset"
        for d in drift
    )


# --- show ----------------------------------------------------------------------------------


async def show(
    topology: Topology, bootstrap: str, *, request_timeout: float = DEFAULT_TIMEOUT
) -> ShowReport:
    """Declared vs cluster for every declared topic, and undeclared topics next to them.

    A cluster topic is *undeclared* (drift) when it shares a first name segment with a declared
    topic (`im.`, `biz.`) but is neither declared nor an instance of a template — typically a
    name some code invented, or a topic auto-created by a typo. Topics of other namespaces
    are listed as foreign; Kafka's internal `__*` topics are skipped.
    """
    async with _connect(bootstrap, request_timeout) as admin:
        cluster = await _describe(admin, None)
    rows: list[TopicRow] = []
    for name, spec in topology.topics.items():
        actual = cluster.get(name)
        if actual is None:
            rows.append(
                TopicRow(
                    topic=name,
                    status="missing",
                    declared_partitions=spec.partitions,
                    partitions=None,
                    declared_replication_factor=spec.replication_factor,
                    replication_factor=None,
                )
            )
            continue
        configs = _config_drift(spec, actual)
        same = (
            actual.partitions == spec.partitions
            and actual.replication_factor == spec.replication_factor
            and not configs
        )
        rows.append(
            TopicRow(
                topic=name,
                status="ok" if same else "drift",
                declared_partitions=spec.partitions,
                partitions=actual.partitions,
                declared_replication_factor=spec.replication_factor,
                replication_factor=actual.replication_factor,
                configs=configs,
            )
        )
    namespaces = {name.split(".", 1)[0] for name in topology.topics}
    instances: dict[str, list[str]] = {name: [] for name in topology.templates}
    foreign: list[str] = []
    for name in sorted(cluster.keys() - topology.topics.keys()):
        if name.startswith("__"):
            continue
        template = topology.template_for(name)
        if template is not None:
            instances[template.name].append(name)
        elif name.split(".", 1)[0] in namespaces:
            actual = cluster[name]
            rows.append(
                TopicRow(
                    topic=name,
                    status="undeclared",
                    declared_partitions=None,
                    partitions=actual.partitions,
                    declared_replication_factor=None,
                    replication_factor=actual.replication_factor,
                )
            )
        else:
            foreign.append(name)
    return ShowReport(
        rows=tuple(rows),
        template_instances={k: tuple(v) for k, v in instances.items()},
        foreign=tuple(foreign),
    )


# --- lag -----------------------------------------------------------------------------------


async def lag(
    topology: Topology,
    bootstrap: str,
    groups: Sequence[str] | None = None,
    *,
    request_timeout: float = DEFAULT_TIMEOUT,
) -> list[GroupLag]:
    """Per declared group (all, or those named), per partition of its topics: where it stands."""
    specs = [topology.group(name) for name in groups] if groups else topology.groups.values()
    specs = list(specs)
    async with _connect(bootstrap, request_timeout) as admin:
        existing = await _describe_partitions(admin, sorted({t for g in specs for t in g.topics}))
        described: dict[str, Any] = {}
        # One group per request: aiokafka 0.14 misdecodes a DescribeGroups response holding
        # several groups from Kafka 4.x (the second one comes out garbled).
        for spec in specs:
            for response in await admin.describe_consumer_groups([spec.group_id]):
                for group in response.to_object()["groups"]:
                    described[group["group"]] = group
        committed = {g.group_id: await admin.list_consumer_group_offsets(g.group_id) for g in specs}
        tps = {tp for g in specs for t in g.topics for tp in existing.get(t, ())}
        tps |= {tp for offsets in committed.values() for tp in offsets}
        start, end = await _offsets(bootstrap, tps, request_timeout)

    result: list[GroupLag] = []
    for spec in specs:
        info = described.get(spec.group_id, {})
        owners = _owners(info.get("members", ()))
        offsets = committed[spec.group_id]
        mine = {tp for t in spec.topics for tp in existing.get(t, ())} | offsets.keys()
        rows = []
        for tp in sorted(mine):
            meta = offsets.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else None
            log_end = end.get(tp, 0)
            behind = log_end - (done if done is not None else start.get(tp, 0))
            rows.append(
                PartitionLag(
                    topic=tp.topic,
                    partition=tp.partition,
                    committed=done,
                    end=log_end,
                    lag=max(behind, 0),
                    owner=owners.get(tp),
                )
            )
        result.append(
            GroupLag(
                group=spec.name,
                group_id=spec.group_id,
                state=info.get("state") or "Dead",
                members=len(info.get("members", ())),
                partitions=tuple(rows),
            )
        )
    return result


async def _describe_partitions(
    admin: Any, topics: Sequence[str]
) -> dict[str, list[TopicPartition]]:
    partitions: dict[str, list[TopicPartition]] = {}
    for topic in await admin.describe_topics(list(topics)):
        if topic["error_code"] == 0:
            partitions[topic["topic"]] = [
                TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"]
            ]
    return partitions


def _owners(members: Iterable[dict[str, Any]]) -> dict[TopicPartition, str]:
    owners: dict[TopicPartition, str] = {}
    for member in members:
        raw = member["member_assignment"]
        if not raw:  # joined but not yet assigned (rebalance in progress)
            continue
        assignment = ConsumerProtocolMemberAssignment.decode(raw)
        who = f"{member['client_id']}@{member['client_host'].lstrip('/')}"
        for tp in assignment.partitions():
            owners[tp] = who
    return owners


async def _offsets(
    bootstrap: str, tps: set[TopicPartition], request_timeout: float
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Log start and end offsets; the admin client of aiokafka 0.14 has no ListOffsets."""
    if not tps:
        return {}, {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=_CLIENT_ID,
        enable_auto_commit=False,
        request_timeout_ms=int(request_timeout * 1000),
    )
    try:
        async with asyncio.timeout(request_timeout):
            await consumer.start()
            start = await consumer.beginning_offsets(list(tps))
            end = await consumer.end_offsets(list(tps))
    except (KafkaConnectionError, TimeoutError) as exc:
        raise ClusterUnreachableError(f"Kafka is not reachable at {bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()
    return dict(start), dict(end)
