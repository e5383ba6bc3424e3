"""bus.admin against the real broker: apply, show and lag on uniquely-named topics."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.admin.new_topic import NewTopic
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from bus.admin import (
    Action,
    ClusterUnreachableError,
    ShowReport,
    TopicRow,
    _settle,
    apply,
    apply_topics,
    forget,
    groups_and_gates,
    lag,
    show,
)
from bus.topology import TopicSpec, Topology, load_topology
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka


class Scenario:
    """A topology of its own, named `cbtest-<random>.*` so runs never collide."""

    def __init__(self, tmp_path: Path, bootstrap: str) -> None:
        self.prefix = f"cbtest-{uuid.uuid4().hex[:12]}"
        self.path = tmp_path / "topology.yaml"
        self.bootstrap = bootstrap
        self.write()

    def write(self, *, partitions: int = 3, retention_ms: int = 3_600_000) -> Topology:
        self.path.write_text(
            textwrap.dedent(
                f"""\
                version: 1
                defaults:
                  configs: {{cleanup.policy: delete}}
                  dlq: {{partitions: 1}}
                topics:
                  {self.prefix}.in:
                    partitions: {partitions}
                    key: user id
                    producers: [test]
                    carries: test records
                    dlq: true
                    configs: {{retention.ms: {retention_ms}}}
                  {self.prefix}.out:
                    partitions: 2
                    key: user id
                    producers: [test]
                    carries: test output
                templates:
                  gate:
                    pattern: "{self.prefix}.gate.{{gate_id}}"
                    partitions: 1
                    key: connection id
                    producers: [test]
                    carries: frames
                    consumer: the gate
                groups:
                  g:
                    group_id: {self.prefix}.g
                    topics: [{self.prefix}.in]
                    does: reads test records
                """
            ),
            encoding="utf-8",
        )
        return self.topology

    @property
    def topology(self) -> Topology:
        return load_topology(self.path)

    def name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def scenario(
    tmp_path: Path, kafka_bootstrap: str, admin: AIOKafkaAdminClient
) -> AsyncIterator[Scenario]:
    scenario = Scenario(tmp_path, kafka_bootstrap)
    yield scenario
    ours = [t for t in await admin.list_topics() if t.startswith(scenario.prefix + ".")]
    if ours:
        await admin.delete_topics(ours)


async def until_config(admin: AIOKafkaAdminClient, topic: str, key: str, value: str) -> None:
    """Wait for a config change to reach the broker's metadata (Kafka has no event for it)."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {key: None})
    async with asyncio.timeout(30):
        while True:
            (response,) = await admin.describe_configs([resource])
            entries = response.to_object()["resources"][0]["config_entries"]
            if any(e["config_names"] == key and e["config_value"] == value for e in entries):
                return
            await asyncio.sleep(0.05)


def by_topic(report: ShowReport) -> dict[str, TopicRow]:
    return {row.topic: row for row in report.rows}


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    return sorted((a.kind, a.topic) for a in actions)


async def test_apply_creates_every_topic_then_does_nothing(scenario: Scenario) -> None:
    topology = scenario.topology
    before = by_topic(await show(topology, scenario.bootstrap))
    assert {row.status for row in before.values()} == {"missing"}

    actions = await apply(topology, scenario.bootstrap)
    assert kinds(actions) == [
        ("create", scenario.name("in")),
        ("create", scenario.name("in.dlq")),
        ("create", scenario.name("out")),
    ]
    after = by_topic(await show(topology, scenario.bootstrap))
    assert {name: row.status for name, row in after.items()} == dict.fromkeys(after, "ok")
    assert after[scenario.name("in")].partitions == 3
    assert after[scenario.name("in.dlq")].partitions == 1
    assert after[scenario.name("out")].replication_factor == 1

    assert await apply(topology, scenario.bootstrap) == []


async def test_apply_raises_partitions(scenario: Scenario) -> None:
    await apply(scenario.topology, scenario.bootstrap)
    grown = scenario.write(partitions=5)
    actions = await apply(grown, scenario.bootstrap)
    assert [(a.kind, a.topic, a.detail) for a in actions] == [
        ("add-partitions", scenario.name("in"), "partitions 3 -> 5")
    ]
    row = by_topic(await show(grown, scenario.bootstrap))[scenario.name("in")]
    assert (row.status, row.partitions) == ("ok", 5)
    assert await apply(grown, scenario.bootstrap) == []


async def test_fewer_declared_partitions_is_drift_apply_cannot_fix(scenario: Scenario) -> None:
    await apply(scenario.write(partitions=4), scenario.bootstrap)
    shrunk = scenario.write(partitions=2)
    actions = await apply(shrunk, scenario.bootstrap)
    assert kinds(actions) == [("cannot-fix", scenario.name("in"))]
    assert "cannot remove partitions" in actions[0].detail
    row = by_topic(await show(shrunk, scenario.bootstrap))[scenario.name("in")]
    assert (row.status, row.partitions, row.declared_partitions) == ("drift", 4, 2)


async def test_config_change_is_applied(scenario: Scenario) -> None:
    await apply(scenario.topology, scenario.bootstrap)
    changed = scenario.write(retention_ms=7_200_000)
    row = by_topic(await show(changed, scenario.bootstrap))[scenario.name("in")]
    assert row.status == "drift"
    assert [(c.name, c.declared, c.actual) for c in row.configs] == [
        ("retention.ms", "7200000", "3600000")
    ]

    actions = await apply(changed, scenario.bootstrap)
    assert [(a.kind, a.topic) for a in actions] == [("alter-configs", scenario.name("in"))]
    assert "retention.ms 3600000 -> 7200000" in actions[0].detail
    row = by_topic(await show(changed, scenario.bootstrap))[scenario.name("in")]
    assert row.status == "ok"
    assert await apply(changed, scenario.bootstrap) == []


async def test_config_set_by_hand_is_drift_and_apply_removes_it(
    scenario: Scenario, admin: AIOKafkaAdminClient
) -> None:
    topology = scenario.topology
    await apply(topology, scenario.bootstrap)
    name = scenario.name("out")
    by_hand = dict(topology.topic(name).configs) | {"segment.ms": "600000"}
    (response,) = await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, by_hand)]
    )
    assert response.to_object()["resources"][0]["error_code"] == 0
    await until_config(admin, name, "segment.ms", "600000")

    row = by_topic(await show(topology, scenario.bootstrap))[name]
    assert row.status == "drift"
    assert [(c.name, c.declared, c.actual) for c in row.configs] == [("segment.ms", None, "600000")]
    assert kinds(await apply(topology, scenario.bootstrap)) == [("alter-configs", name)]
    assert by_topic(await show(topology, scenario.bootstrap))[name].status == "ok"


async def test_show_lists_undeclared_and_gate_topics_apart(
    scenario: Scenario, admin: AIOKafkaAdminClient
) -> None:
    topology = scenario.topology
    await apply(topology, scenario.bootstrap)
    gate = topology.gate_topic("g1")
    assert kinds(await apply_topics([gate], scenario.bootstrap)) == [("create", gate.name)]
    stray = scenario.name("stray")
    response = await admin.create_topics([NewTopic(stray, 1, 1)])
    assert response.to_object()["topic_errors"][0]["error_code"] == 0

    report = await show(topology, scenario.bootstrap)
    rows = by_topic(report)
    assert gate.name not in rows
    assert gate.name in report.template_instances["gate"]
    assert rows[stray].status == "undeclared"
    assert rows[stray].partitions == 1
    assert report.drift
    assert all(rows[name].status == "ok" for name in topology.topics)
    assert not any(t.startswith("__") for t in (*rows, *report.foreign))


async def test_lag_counts_what_the_group_has_not_committed(scenario: Scenario) -> None:
    topology = scenario.topology
    await apply(topology, scenario.bootstrap)
    topic, group_id = scenario.name("in"), topology.group("g").group_id
    produced, committed = 10, 4
    producer = AIOKafkaProducer(bootstrap_servers=scenario.bootstrap)
    await producer.start()
    try:
        for i in range(produced):
            await producer.send_and_wait(topic, f"r{i}".encode(), partition=0)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=scenario.bootstrap,
        group_id=group_id,
        client_id="lag-test",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        received = 0
        async with asyncio.timeout(60):
            while received < produced:
                batches = await consumer.getmany(timeout_ms=1000)
                received += sum(len(records) for records in batches.values())
        tp0 = TopicPartition(topic, 0)
        await consumer.commit({tp0: OffsetAndMetadata(committed, "")})

        (live,) = await lag(topology, scenario.bootstrap, ["g"])
        assert (live.group, live.group_id, live.state, live.members) == (
            "g",
            group_id,
            "Stable",
            1,
        )
        rows = {p.partition: p for p in live.partitions}
        assert sorted(rows) == [0, 1, 2]
        assert (rows[0].committed, rows[0].end, rows[0].lag) == (committed, produced, 6)
        assert rows[0].owner is not None
        assert rows[0].owner.startswith("lag-test@")
        assert all(rows[p].owner == rows[0].owner for p in (1, 2))
        assert (rows[1].committed, rows[1].end, rows[1].lag) == (None, 0, 0)
        assert live.total == produced - committed
    finally:
        await consumer.stop()

    (idle,) = await lag(topology, scenario.bootstrap)
    assert (idle.state, idle.members, idle.total) == ("Empty", 0, produced - committed)
    assert all(p.owner is None for p in idle.partitions)


async def test_lag_of_a_group_that_never_committed_counts_from_log_start(
    scenario: Scenario,
) -> None:
    topology = scenario.topology
    await apply(topology, scenario.bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=scenario.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(scenario.name("in"), b"x", partition=2)
    finally:
        await producer.stop()
    (group,) = await lag(topology, scenario.bootstrap)
    assert group.state == "Dead"
    assert [(p.partition, p.committed, p.lag) for p in group.partitions] == [
        (0, None, 0),
        (1, None, 0),
        (2, None, 1),
    ]


async def test_unreachable_cluster_fails_fast(scenario: Scenario) -> None:
    started = time.monotonic()
    with pytest.raises(ClusterUnreachableError, match=r"not reachable at 127\.0\.0\.1:1"):
        await apply(scenario.topology, "127.0.0.1:1", request_timeout=2)
    assert time.monotonic() - started < 5


async def test_silent_broker_fails_within_the_timeout(tmp_path: Path) -> None:
    # Accepts connections and never answers: only the timeout can end the wait.
    writers: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    topology = Scenario(tmp_path, "unused").topology
    started = time.monotonic()
    try:
        with pytest.raises(ClusterUnreachableError, match=rf"not reachable at 127\.0\.0\.1:{port}"):
            await show(topology, f"127.0.0.1:{port}", request_timeout=1)
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
    assert time.monotonic() - started < 4


async def test_forget_deletes_empty_groups_and_topics_and_leaves_groups_in_use(
    scenario: Scenario, admin: AIOKafkaAdminClient
) -> None:
    topology = scenario.topology
    await apply(topology, scenario.bootstrap)
    topic = scenario.name("in")
    tp0 = TopicPartition(topic, 0)

    async def member(group_id: str) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=scenario.bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
        )
        await consumer.start()
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
        await consumer.commit({tp0: OffsetAndMetadata(1, "")})
        return consumer

    gone, in_use = scenario.name("gone"), scenario.name("in-use")
    await (await member(gone)).stop()
    active = await member(in_use)
    gate = topology.gate_topic("g1")
    await apply_topics([gate], scenario.bootstrap)
    try:
        groups, gates = await groups_and_gates(topology, scenario.bootstrap)
        assert {gone, in_use} <= groups
        assert gate.name in gates
        assert topic not in gates  # not an instance of the gate template
        deleted = await forget(
            scenario.bootstrap,
            groups=[gone, in_use, scenario.name("never-was")],
            topics=[topic, gate.name, scenario.name("never-was")],
        )
        assert deleted == 1
        groups = {g for g, _ in await admin.list_consumer_groups()}
        assert gone not in groups
        assert in_use in groups

        async def topic_gone() -> bool:
            return not {topic, gate.name} & set(await admin.list_topics())

        await wait_for(topic_gone)
    finally:
        await active.stop()
    assert await forget(scenario.bootstrap, groups=[in_use]) == 1


class LaggingBroker:
    """An admin client whose DescribeConfigs goes to a broker that learns of a new topic
    `unknown_for` answers after the metadata named it (as on a cluster)."""

    def __init__(self, topic: str, unknown_for: int) -> None:
        self.topic = topic
        self.unknown_for = unknown_for
        self.asked = 0

    async def describe_topics(self, names: list[str]) -> list[dict[str, object]]:
        partition = {"error_code": 0, "leader": 1, "replicas": [1]}
        return [{"error_code": 0, "topic": self.topic, "partitions": [partition]}]

    async def describe_configs(self, resources: list[ConfigResource]) -> list[object]:
        self.asked += 1
        known = self.asked > self.unknown_for
        resource: dict[str, object] = {
            "resource_name": self.topic,
            "error_code": 0 if known else 3,  # UNKNOWN_TOPIC_OR_PARTITION
            "error_message": "",
            "config_entries": [],
        }

        class Response:
            def to_object(self) -> dict[str, object]:
                return {"resources": [resource]}

        return [Response()]


async def test_settle_waits_for_the_broker_that_does_not_know_a_new_topic_yet() -> None:
    spec = TopicSpec(
        name="cbtest.new",
        partitions=1,
        replication_factor=1,
        configs={},
        key="",
        producers=(),
        carries="",
    )
    admin = LaggingBroker(spec.name, unknown_for=2)
    await _settle(admin, [spec], request_timeout=5.0)
    assert admin.asked == 3
