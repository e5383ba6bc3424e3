"""`coffeebus dlq show|replay` on a real broker, with a real consumer group dead-lettering.

A member of the msg group (the wiring `coffeebus consume msg` uses) runs on a private
broker; a poison record published to im.up.msg is dead-lettered by the bus runner. The
commands, run as processes, list it with its error and source, a dry run publishes nothing,
and a replay puts it back on im.up.msg with its key and value — where the group rejects it
again, so a second dead letter appears that names the one it was replayed from.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bus.admin import apply
from bus.base import TopicPartition
from bus.topology import load_topology
from coffeebus.dlq import summary
from coffeebus.roles import ConsumerRole
from coffeebus.wiring import Mode, Runtime, open_runtime
from tests.coffeebus.conftest import Isolated
from tests.coffeebus.test_cli import coffeebus as run_coffeebus
from tests.waiting import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.mongo]

SOURCE = "im.up.msg"
DLQ = "im.up.msg.dlq"


def coffeebus(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`coffeebus ARGS --bootstrap BOOTSTRAP`, as a separate process."""
    return run_coffeebus(*args, "--bootstrap", bootstrap)


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
async def msg_member(isolated: Isolated) -> AsyncIterator[Runtime]:
    """The runtime of a process running one member of the msg group."""
    bootstrap = isolated.env["KAFKA_BOOTSTRAP_SERVERS"]
    await apply(load_topology(), bootstrap)
    async with open_runtime(isolated.settings(), Mode.REAL, client_id="dlq-test") as runtime:
        role = ConsumerRole(runtime, "msg")
        await role.start()
        try:
            yield runtime
        finally:
            await role.stop()


async def dead_letters(bootstrap: str) -> int:
    [count] = [c for c in await summary(load_topology(), bootstrap) if c.topic == DLQ]
    return count.records


async def test_show_lists_a_rejected_record_and_replay_puts_it_back(
    msg_member: Runtime, isolated: Isolated
) -> None:
    bootstrap = isolated.env["KAFKA_BOOTSTRAP_SERVERS"]
    before = await dead_letters(bootstrap)
    key = f"poison-{uuid.uuid4().hex}"
    value = b"\x00\x01 not an envelope"
    meta = await msg_member.bus.publish(SOURCE, value, key=key.encode())
    await wait_for(lambda: _more(bootstrap, before), within=60)

    counts = {c["topic"]: c for c in as_json(coffeebus(bootstrap, "dlq", "show", "--json"))}
    assert counts.keys() == {t.name for t in load_topology().dlq_topics()}
    assert counts[DLQ]["records"] == before + 1
    assert counts[DLQ]["source"] == SOURCE

    listed = as_json(coffeebus(bootstrap, "dlq", "show", SOURCE, "--json"))
    [letter] = [d for d in listed if d["key"] == key]
    assert letter["source_topic"] == SOURCE
    assert (letter["source_partition"], letter["source_offset"]) == (meta.partition, meta.offset)
    assert letter["group"] == load_topology().group("msg").group_id
    assert letter["error_type"]
    assert letter["error"]
    assert letter["value_bytes"] == len(value)
    assert letter["replayed_from"] is None
    text = coffeebus(bootstrap, "dlq", "show", DLQ)
    assert text.returncode == 0, text.stderr
    assert key in text.stdout
    assert text.stdout.splitlines()[0].split()[:3] == ["AT", "TIME", "KEY"]

    at = ("--from-offset", str(letter["offset"]), "--limit", "1")
    dry = as_json(coffeebus(bootstrap, "dlq", "replay", SOURCE, *at, "--dry-run", "--json"))
    assert (dry["replayed"], dry["dry_run"]) == (1, True)
    assert await dead_letters(bootstrap) == before + 1  # nothing published

    source_end = await _end(msg_member, TopicPartition(SOURCE, meta.partition))
    done = coffeebus(bootstrap, "dlq", "replay", DLQ, *at)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"replayed 1 records from {DLQ} to {SOURCE}",
        f"  partition {letter['partition']}: next replay --from-offset {letter['offset'] + 1}",
    ]
    # Back on the source topic, same partition (same key), and rejected again by the group.
    assert await _end(msg_member, TopicPartition(SOURCE, meta.partition)) == source_end + 1
    await wait_for(lambda: _more(bootstrap, before + 1), within=60)
    again = as_json(coffeebus(bootstrap, "dlq", "show", DLQ, "--json"))
    [first, second] = [d for d in again if d["key"] == key]
    assert second["replayed_from"] == f"{DLQ}:{letter['partition']}:{letter['offset']}"
    assert (second["source_partition"], second["source_offset"]) == (meta.partition, source_end)
    assert first == letter


async def _more(bootstrap: str, than: int) -> bool:
    return await dead_letters(bootstrap) > than


async def _end(runtime: Runtime, tp: TopicPartition) -> int:
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415
    from aiokafka import TopicPartition as KafkaTopicPartition  # noqa: PLC0415

    consumer = AIOKafkaConsumer(bootstrap_servers=runtime.settings.kafka.bootstrap_servers)
    await consumer.start()
    try:
        ktp = KafkaTopicPartition(tp.topic, tp.partition)
        end: int = (await consumer.end_offsets([ktp]))[ktp]
        return end
    finally:
        await consumer.stop()


def test_a_topic_without_a_dead_letter_topic_is_a_usage_error() -> None:
    result = coffeebus("127.0.0.1:1", "dlq", "show", "im.gate.x")
    assert result.returncode == 2
    assert result.stderr.startswith("coffeebus: error: ")
    assert "Traceback" not in result.stderr
