"""`coffeebus topology lag` against the real broker: exact lag, laggiest first, --json, --group.

The topology is a file of its own whose topics and groups are named `cbtest-<random>.*`, so
the numbers are ours alone on the shared broker. Group `worker` consumes topic `a` and has
committed some offsets; group `audit` consumes `a` and `b` and has never committed, so its
lag counts from the start of the log.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from bus.admin import apply
from bus.topology import load_topology
from tests.coffeebus.conftest import REPO

pytestmark = pytest.mark.kafka

# Records produced per (topic, partition), and offsets `worker` commits on topic a.
PRODUCED = {("a", 0): 10, ("a", 1): 5, ("b", 1): 3}
COMMITTED = {0: 4, 1: 5}  # a[0]: 6 behind; a[1]: caught up; a[2]: empty, never committed


@dataclass
class Lagging:
    prefix: str
    path: Path
    bootstrap: str

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    def lag(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`coffeebus topology lag --file <ours> ARGS`, as a user runs it."""
        return subprocess.run(
            [
                *(sys.executable, "-m", "coffeebus", "topology", "lag"),
                *("--file", str(self.path), "--bootstrap", self.bootstrap, *args),
            ],
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if not k.startswith("COFFEEBUS_TOPOLOGY")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def _topology(prefix: str) -> str:
    return textwrap.dedent(
        f"""\
        version: 1
        defaults:
          configs: {{cleanup.policy: delete}}
          dlq: {{partitions: 1}}
        topics:
          {prefix}.a:
            partitions: 3
            key: user id
            producers: [test]
            carries: test records
            dlq: true
          {prefix}.b:
            partitions: 2
            key: user id
            producers: [test]
            carries: more test records
            dlq: true
        groups:
          worker:
            group_id: {prefix}.worker
            topics: [{prefix}.a]
            does: has committed part of a
          audit:
            group_id: {prefix}.audit
            topics: [{prefix}.a, {prefix}.b]
            does: never committed anything
        """
    )


@pytest.fixture
async def lagging(tmp_path: Path, kafka_bootstrap: str) -> AsyncIterator[Lagging]:
    """Our topics with `PRODUCED` records, and `worker`'s `COMMITTED` offsets on topic a."""
    prefix = f"cbtest-{uuid.uuid4().hex[:12]}"
    path = tmp_path / "topology.yaml"
    path.write_text(_topology(prefix), encoding="utf-8")
    scenario = Lagging(prefix, path, kafka_bootstrap)
    topology = load_topology(path)
    await apply(topology, kafka_bootstrap)
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for (suffix, partition), count in PRODUCED.items():
                for i in range(count):
                    await producer.send_and_wait(
                        scenario.topic(suffix), f"r{i}".encode(), partition=partition
                    )
        finally:
            await producer.stop()
        # Commit without joining the group: an assigned (not subscribed) consumer commits
        # as a simple consumer, so the group stays Empty with exactly these offsets.
        committer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            group_id=topology.group("worker").group_id,
            enable_auto_commit=False,
        )
        await committer.start()
        try:
            offsets = {
                TopicPartition(scenario.topic("a"), p): OffsetAndMetadata(offset, "")
                for p, offset in COMMITTED.items()
            }
            committer.assign(list(offsets))
            await committer.commit(offsets)
        finally:
            await committer.stop()
        yield scenario
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            ours = [t for t in await admin.list_topics() if t.startswith(prefix + ".")]
            await admin.delete_topics(ours)
        finally:
            await admin.close()


async def test_table_sorts_laggiest_first_marks_never_committed_and_totals(
    lagging: Lagging,
) -> None:
    result = await asyncio.to_thread(lagging.lag)
    assert result.returncode == 0, result.stderr
    summary, totals = result.stdout.rstrip("\n").split("\n\n")
    header, *rows = summary.splitlines()
    assert header.split() == [
        *("GROUP", "TOPIC", "PARTITIONS", "COMMITTED", "LAG"),
        *("MAX", "LAG", "ON", "PARTITION", "STATE", "MEMBERS"),
    ]
    a, b = lagging.topic("a"), lagging.topic("b")
    # audit on a: 10 + 5 from the log start (max 10 on partition 0); worker on a: 10 - 4.
    assert [row.split() for row in rows] == [
        ["audit", a, "3", "none", "15", "10", "0", "Dead", "0"],
        ["worker", a, "3", "2/3", "6", "6", "0", "Empty", "0"],
        ["audit", b, "2", "none", "3", "3", "1", "Dead", "0"],
    ]
    assert totals == (
        "total lag 24 over 2 groups, 2 lagging; "
        "never committed: audit (lag counted from the start of the log)"
    )


async def test_partitions_lists_committed_end_lag_per_partition(lagging: Lagging) -> None:
    result = await asyncio.to_thread(lagging.lag, "--group", "worker", "--partitions")
    assert result.returncode == 0, result.stderr
    summary, totals, detail = result.stdout.rstrip("\n").split("\n\n")
    assert len(summary.splitlines()) == 2  # header + worker on a
    assert totals == "total lag 6 over 1 group, 1 lagging"
    header, *rows = detail.splitlines()
    assert header.split() == ["GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "OWNER"]
    a = lagging.topic("a")
    assert [row.split() for row in rows] == [
        ["worker", a, "0", "4", "10", "6", "-"],
        ["worker", a, "1", "5", "5", "0", "-"],
        ["worker", a, "2", "-", "0", "0", "-"],
    ]


async def test_json_gives_groups_laggiest_first_with_topics_and_partitions(
    lagging: Lagging,
) -> None:
    result = await asyncio.to_thread(lagging.lag, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    a, b = lagging.topic("a"), lagging.topic("b")
    assert report["total_lag"] == 24
    audit, worker = report["groups"]
    assert (audit["group"], audit["lag"], audit["never_committed"]) == ("audit", 18, True)
    assert audit["topics"] == [
        {
            "topic": a,
            "partitions": 3,
            "committed_partitions": 0,
            "lag": 15,
            "max_lag": 10,
            "max_lag_partition": 0,
        },
        {
            "topic": b,
            "partitions": 2,
            "committed_partitions": 0,
            "lag": 3,
            "max_lag": 3,
            "max_lag_partition": 1,
        },
    ]
    assert (worker["group"], worker["group_id"], worker["state"], worker["members"]) == (
        "worker",
        f"{lagging.prefix}.worker",
        "Empty",
        0,
    )
    assert (worker["lag"], worker["never_committed"]) == (6, False)
    assert [(p["partition"], p["committed"], p["end"], p["lag"]) for p in worker["partitions"]] == [
        (0, 4, 10, 6),
        (1, 5, 5, 0),
        (2, None, 0, 0),
    ]


async def test_group_filter_and_a_group_with_no_lag(lagging: Lagging) -> None:
    result = await asyncio.to_thread(lagging.lag, "--group", "audit", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [g["group"] for g in report["groups"]] == ["audit"]
    assert report["total_lag"] == 18

    # Commit everything worker has: its row stays, with nothing behind and no partition named.
    committer = AIOKafkaConsumer(
        bootstrap_servers=lagging.bootstrap,
        group_id=f"{lagging.prefix}.worker",
        enable_auto_commit=False,
    )
    await committer.start()
    try:
        offsets = {
            TopicPartition(lagging.topic("a"), p): OffsetAndMetadata(end, "")
            for p, end in ((0, 10), (1, 5), (2, 0))
        }
        committer.assign(list(offsets))
        await committer.commit(offsets)
    finally:
        await committer.stop()
    result = await asyncio.to_thread(lagging.lag, "--group", "worker")
    assert result.returncode == 0, result.stderr
    summary, totals = result.stdout.rstrip("\n").split("\n\n")
    assert [row.split() for row in summary.splitlines()[1:]] == [
        ["worker", lagging.topic("a"), "3", "3/3", "0", "0", "-", "Empty", "0"]
    ]
    assert totals == "total lag 0 over 1 group, 0 lagging"
