"""`coffeebus consume`: its help, and static membership across a restart, on a real broker.

Two `coffeebus consume msg` processes with distinct static member ids share the group's
partitions. One is stopped and started again with the same id: the broker keeps its
partitions while it is away (the group is not rebalanced: the other member keeps its
member id, its partitions, and is not given an assignment again), and the restarted
process gets exactly its old partitions back. The group is observed with the admin
client's DescribeGroups, as `coffeebus topology lag` does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError

from bus.admin import apply
from bus.topology import load_topology
from store.mongo.client import connect_mongo, database, ensure_indexes
from tests.coffeebus.conftest import REPO, Isolated
from tests.waiting import wait_for

GROUP = "msg"
# Far above a cold start of the process on a busy 2-core host (imports alone can take 15 s).
SESSION_TIMEOUT_MS = 90_000


def test_help_explains_every_option_and_static_membership() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coffeebus", "consume", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = " ".join(result.stdout.split())
    for needle in (
        "--config PATH",
        "--static-member-id ID",
        "group.instance.id ID-GROUP",
        "rolling restarts",
        "session timeout",
        "COFFEEBUS_<SECTION>__<FIELD>",
        "exit codes",
        "SIGTERM",
    ):
        assert needle in text
    for name, spec in load_topology().groups.items():
        assert f"{name} {spec.does}" in text  # every group, with what it does


Members = dict[str, tuple[str, frozenset[tuple[str, int]]]]


async def members(bootstrap: str, group_id: str) -> tuple[str, Members]:
    """The group's state and, per Kafka client id: (member id, assigned partitions)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group_id])
    except KafkaError as exc:
        if not exc.retriable:  # e.g. the coordinator of a fresh broker is not elected yet
            raise
        return "", {}
    finally:
        await admin.close()
    [group] = response.to_object()["groups"]
    found: Members = {}
    for member in group["members"]:
        raw = member["member_assignment"]
        tps = ConsumerProtocolMemberAssignment.decode(raw).partitions() if raw else []
        found[member["client_id"]] = (member["member_id"], frozenset(tps))
    return group["state"], found


@dataclass
class Member:
    """One `coffeebus consume` process and its log."""

    proc: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        """Fail at once, with its log, if the process has exited (no point waiting on it)."""
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"{self.log.name}: exited {self.proc.returncode}:\n{tail}")

    def assignments(self) -> list[frozenset[tuple[str, int]]]:
        """The partitions its consumer was given, each time (bus.kafka logs each)."""
        text = self.log.read_text(errors="replace")
        return [
            frozenset((topic, int(p)) for topic, p in re.findall(r"'([\w.-]+)\[(\d+)\]'", listed))
            for listed in re.findall(r": assigned \[(.*?)\]$", text, flags=re.MULTILINE)
        ]


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.running: list[Member] = []

    def start(self, name: str) -> Member:
        """`coffeebus consume msg --static-member-id NAME`, Kafka client id NAME-..."""
        log = self.logs / f"{name}-{len(self.running)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "coffeebus", "consume", GROUP),
                    *("--static-member-id", name),
                ],
                cwd=REPO,
                env={**self.env, "COFFEEBUS_KAFKA__CLIENT_ID": name},
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        self.running.append(Member(proc, log))
        return self.running[-1]

    def stop_all(self) -> None:
        for member in self.running:
            if member.proc.poll() is None:
                member.proc.kill()
                member.proc.wait()


@pytest.fixture
def processes(isolated: Isolated, tmp_path: Path) -> Iterator[Processes]:
    env = {
        **os.environ,
        **isolated.env,
        "COFFEEBUS_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "COFFEEBUS_LOG__LEVEL": "INFO",
    }
    procs = Processes(env, tmp_path)
    yield procs
    procs.stop_all()


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.mongo
async def test_static_member_restart_gets_its_partitions_back_without_a_rebalance(
    isolated: Isolated, processes: Processes
) -> None:
    bootstrap = isolated.env["KAFKA_BOOTSTRAP_SERVERS"]
    topology = load_topology()
    await apply(topology, bootstrap)
    spec = topology.group(GROUP)
    everything = {
        (topic, p) for topic in spec.topics for p in range(topology.topic(topic).partitions)
    }
    # Indexes first, as a deployment's first process leaves them: FerretDB v1 panics on one
    # of two concurrent createIndexes in a fresh database (a start-up race of the test, not
    # of what it tests).
    settings = isolated.settings()
    mongo = connect_mongo(settings.mongo.url)
    try:
        await ensure_indexes(database(mongo, settings.mongo.database))
    finally:
        await mongo.close()
    a, b = "replica-a", "replica-b"
    client_a, client_b = (f"{name}-consume-{GROUP}-{spec.group_id}" for name in (a, b))
    member_a, member_b = processes.start(a), processes.start(b)

    async def both_assigned() -> bool:
        member_a.check_alive()
        member_b.check_alive()
        state, found = await members(bootstrap, spec.group_id)
        return (
            state == "Stable"
            and found.keys() == {client_a, client_b}
            and all(tps for _, tps in found.values())
            and set().union(*(tps for _, tps in found.values())) == everything
        )

    await wait_for(both_assigned, within=120)
    _, before = await members(bootstrap, spec.group_id)
    assert before[client_a][1].isdisjoint(before[client_b][1])
    # a may have been assigned twice already (alone first, then with b): count from when it
    # has heard of its present partitions.
    await wait_for(lambda: member_a.assignments()[-1:] == [before[client_a][1]], within=30)
    assigned_a = len(member_a.assignments())

    member_b.proc.send_signal(signal.SIGTERM)
    assert member_b.proc.wait(timeout=60) == 0
    # Gone, yet still a member: the broker holds b's partitions for it, nobody rebalances.
    state, away = await members(bootstrap, spec.group_id)
    assert state == "Stable"
    assert away == before

    restarted = processes.start(b)

    async def b_rejoined() -> bool:
        member_a.check_alive()
        restarted.check_alive()
        state, found = await members(bootstrap, spec.group_id)
        return (
            state == "Stable"
            and client_b in found
            and found[client_b][0] != before[client_b][0]  # the new process's member id
            and bool(found[client_b][1])
        )

    await wait_for(b_rejoined, within=120)
    await wait_for(lambda: restarted.assignments() == [before[client_b][1]], within=30)
    _, after = await members(bootstrap, spec.group_id)
    assert after[client_a] == before[client_a]  # same member, same partitions
    assert after[client_b][1] == before[client_b][1]  # b's partitions came back to it
    assert len(member_a.assignments()) == assigned_a  # a was never rebalanced
    assert member_a.proc.poll() is None
