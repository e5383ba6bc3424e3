"""A `coffeebus consume msg fanout` process killed with SIGKILL mid-load loses and duplicates
nothing (DESIGN invariants 3, 5, 6), on the real services.

Two senders write to one receiver through an in-process gate while the msg and fanout groups
run in a separate process. After a third of the messages are acked, that process is killed
(SIGKILL: no drain, no commit) and restarted with the same static member id, so it gets its
partitions back at once. Clients resend what timed out, with the same client_msg_id, as a
CoffeeChat client does. The checker then demands, for every acked message: stored once with
the acked server_msg_id, in the receiver's and the sender's inboxes exactly once, and every
inbox in conversation-seq order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from bus.topology import default_topology_path, load_topology
from schemas.ids import UserId, c2c_conversation_id
from sdk.client import Client
from sdk.errors import RequestTimeoutError
from tests.consumers.conftest import System, commit_ends
from tests.waiting import wait_for

log = logging.getLogger(__name__)

# A fault test: `make chaos` runs it, `make test` does not. On FerretDB v1 (SQLite) the
# restarted process's first store writes can hang for minutes after the SIGKILL (seen in
# full-suite runs, not alone); until that is understood it stays out of the CI run.
pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.mongo, pytest.mark.chaos]

PER_SENDER = 150
WINDOW = 10  # sends in flight per sender


def _consume(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "coffeebus", "consume", "msg", "fanout"),
                *("--static-member-id", "k1"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


async def test_a_killed_consumer_process_loses_and_duplicates_nothing(
    real_system: System, tmp_path: Path
) -> None:
    system = real_system
    settings = system.runtime.settings
    suffix = f"kill{uuid.uuid4().hex[:10]}"
    # The process reads its topology from a file: the same topics, group ids of its own.
    text = default_topology_path().read_text()
    topology_file = tmp_path / "topology.yaml"
    topology_file.write_text(re.sub(r"group_id: (\S+)", rf"group_id: \1.{suffix}", text))
    topology = load_topology(topology_file)
    groups = [topology.group(name) for name in ("msg", "fanout")]
    assert system.kafka_bootstrap is not None
    await commit_ends(system.kafka_bootstrap, topology, [(g.group_id, g.topics) for g in groups])
    env = {
        **os.environ,
        "COFFEEBUS_TOPOLOGY": str(topology_file),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MONGO_URL": settings.mongo.url,
        "REDIS_URL": settings.redis.url,
        "COFFEEBUS_MONGO__DATABASE": settings.mongo.database,
        "COFFEEBUS_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "COFFEEBUS_LOG__LEVEL": "WARNING",
    }

    gate = await system.gate()
    bob = await system.user()
    senders = [await system.user(), await system.user()]
    clients = [await system.login(u, gate, request_timeout=8.0) for u in senders]
    await system.login(bob, gate)  # online: pushes flow while the process dies
    acked: dict[tuple[UserId, str], int] = {}
    kill_at = asyncio.Event()

    async def send(client: Client, sender: UserId, n: int) -> None:
        client_msg_id = str(uuid.uuid4())
        while True:
            try:
                ack = await client.send_text(bob, f"{sender}:{n}", client_msg_id=client_msg_id)
            except RequestTimeoutError:
                continue  # a CoffeeChat client resends with the same client_msg_id
            acked[(sender, client_msg_id)] = ack.server_msg_id
            if len(acked) >= 2 * PER_SENDER // 3:
                kill_at.set()
            return

    async def sender_loop(client: Client, sender: UserId) -> None:
        window = asyncio.Semaphore(WINDOW)

        async def one(n: int) -> None:
            async with window:
                await send(client, sender, n)

        await asyncio.gather(*(one(n) for n in range(PER_SENDER)))

    async def inbox(user: UserId) -> list[tuple[str, int]]:
        page = await system.runtime.inbox.after(user, 0, 10_000)
        assert not page.has_more
        return [(e.message.conversation, e.message.seq) for e in page.entries]

    async def complete() -> bool:
        return len(await inbox(bob)) >= 2 * PER_SENDER

    t0 = time.monotonic()
    process = _consume(env, tmp_path / "first.log")
    try:
        load = asyncio.gather(*(sender_loop(c, u) for c, u in zip(clients, senders, strict=True)))
        async with asyncio.timeout(90):
            await kill_at.wait()
        log.info("kill after %d acks at %.1fs", len(acked), time.monotonic() - t0)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process = _consume(env, tmp_path / "second.log")
        async with asyncio.timeout(120):
            await load
        log.info("all acked at %.1fs", time.monotonic() - t0)
        # Every acked message reaches the inbox while the (restarted) process runs.
        try:
            await wait_for(complete, within=60)
        except TimeoutError:
            have = set(await inbox(bob))
            missing = sorted(
                (c, seq)
                for (s, _), seq in acked.items()
                if (c := c2c_conversation_id(s, bob), seq) not in have
            )
            raise AssertionError(f"bob has {len(have)}; missing {missing}") from None
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    stderr = (tmp_path / "second.log").read_text(errors="replace")
    assert "Traceback" not in stderr, stderr[-3000:]

    assert len(acked) == 2 * PER_SENDER
    runtime = system.runtime
    for sender in senders:
        conversation = c2c_conversation_id(sender, bob)
        history = await runtime.messages.history(conversation, 0, 1000)
        mine = {cmid: seq for (s, cmid), seq in acked.items() if s == sender}
        assert Counter(m.client_msg_id for m in history) == Counter(mine.keys())  # each stored once
        assert {m.client_msg_id: m.seq for m in history} == mine  # with the acked id

    expected_bob = Counter((c2c_conversation_id(s, bob), seq) for (s, _), seq in acked.items())
    bob_inbox = await inbox(bob)
    assert Counter(bob_inbox) == expected_bob  # every acked message exactly once
    for sender in senders:
        conversation = c2c_conversation_id(sender, bob)
        in_bob = [seq for conv, seq in bob_inbox if conv == conversation]
        assert in_bob == sorted(in_bob)  # inbox order follows the conversation's order
        sender_inbox = await inbox(sender)
        sent = sorted(seq for (s, _), seq in acked.items() if s == sender)
        assert [seq for conv, seq in sender_inbox if conv == conversation] == sent
