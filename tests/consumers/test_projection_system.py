"""The projection group and the reads that do not wait for it (docs/architecture.md,
"Storage"): with the projection stopped, every read a client makes is still right — the
hot state in Redis answers — and once it runs again the document store catches up; in
steady state the reads clients make all the time cost no document-store query, and older
history costs a bounded number.

The hot windows are small here (10 messages per conversation, 10 entries per inbox) so
that the projection's trims move most of every timeline below the floor, into MongoDB.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import monitoring

from bus.base import TopicPartition
from coffeebus.settings import HotSettings
from schemas.ids import UserId, c2c_conversation_id
from sdk.client import Client
from tests.consumers.conftest import System, open_real_system
from tests.waiting import wait_for

SMALL = HotSettings(conversation_window=10, inbox_window=10)
MESSAGES = 60


#: What the projection group writes: its commands, running beside the measured request,
#: are not the request's.
PROJECTED = frozenset(
    {"messages", "inbox", "sessions", "session_reads", "deliveries", "group_members"}
)


class _Queries(monitoring.CommandListener):
    """Commands sent to one database while armed (PyMongo listeners are process-wide), but
    the projection's writes."""

    def __init__(self) -> None:
        self.database = ""
        self.commands: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.database or event.database_name != self.database:
            return
        target = event.command.get(event.command_name)
        if event.command_name in ("insert", "update") and target in PROJECTED:
            return
        self.commands.append(f"{event.command_name} {target}")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


QUERIES = _Queries()
monitoring.register(QUERIES)


@pytest.fixture
async def small_system(
    kafka_bootstrap: str, redis_url: str, mongo_url: str
) -> AsyncIterator[System]:
    async with open_real_system(kafka_bootstrap, redis_url, mongo_url, hot=SMALL) as system:
        yield system


async def _chat(alice: Client, bob_id: UserId, count: int) -> list[Any]:
    """`count` messages alice → bob, one at a time; their acks, in order."""
    return [await alice.send_text(bob_id, f"hello {n}") for n in range(count)]


async def _all_history(client: Client, peer: int) -> list[int]:
    """Every server_msg_id of the conversation, paging back 20 at a time."""
    seqs: list[int] = []
    end = 0
    while True:
        page = await client.history(peer, end_msg_id=end, limit=20)
        if not page.msg_list:
            return sorted(seqs)
        seqs.extend(m.server_msg_id for m in page.msg_list)
        end = min(m.server_msg_id for m in page.msg_list)


async def _all_synced(client: Client) -> list[int]:
    """Every message seq in the user's inbox, synced 7 at a time."""
    seqs: list[int] = []
    after = 0
    while True:
        page = await client.sync(after, limit=7)
        seqs.extend(e.msg.server_msg_id for e in page.entries)
        if not page.has_more:
            return seqs
        after = page.entries[-1].seq


async def _check_reads(bob: Client, alice_id: UserId, sent: list[int]) -> None:
    """Every read of bob's view of the conversation agrees with what was acked."""
    [session] = (await bob.recent_sessions()).contact_session_list
    assert (session.session_id, session.server_msg_id) == (alice_id, sent[-1])
    assert session.unread_cnt == len(sent) - 5  # bob read up to the fifth
    assert await _all_history(bob, alice_id) == sent
    assert await _all_synced(bob) == sent
    latest = await bob.latest_msg_id(alice_id)
    assert latest.latest_msg_id  # a client_msg_id
    by_id = await bob.messages_by_id(alice_id, [latest.latest_msg_id])
    assert [m.server_msg_id for m in by_id.msg_list] == [sent[-1]]


async def _chat_with_the_projection_stopped(
    system: System,
) -> tuple[dict[TopicPartition, int], UserId, UserId, Client, list[int]]:
    """With the projection group stopped: alice sends bob `MESSAGES` messages, bob reads up
    to the fifth, and his session list says so. The log positions the projection stopped
    at, both users, bob's client and the acked seqs."""
    await system.start_consumers()
    log_topics = system.topology.group("projection").topics
    await system.stop_consumers(["projection"])
    from_here = await system.positions(log_topics)
    alice_id, bob_id = await system.user(), await system.user()
    alice, bob = await system.login(alice_id), await system.login(bob_id)
    acks = await _chat(alice, bob_id, MESSAGES)
    sent = [a.server_msg_id for a in acks]
    await bob.read_ack(alice_id, sent[4])
    await wait_for(lambda: len(system.pushes(bob, 0x0301)) == MESSAGES)

    async def read_sessions_settled() -> bool:
        [session] = (await bob.recent_sessions()).contact_session_list
        return bool(session.unread_cnt == MESSAGES - 5)

    await wait_for(read_sessions_settled)
    return from_here, alice_id, bob_id, bob, sent


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.mongo
async def test_reads_stay_right_while_the_projection_is_stopped(small_system: System) -> None:
    system = small_system
    from_here, alice_id, bob_id, bob, sent = await _chat_with_the_projection_stopped(system)
    conv = c2c_conversation_id(alice_id, bob_id)
    cold = system.runtime.projection.messages
    assert await cold.history(conv, 0, 100) == []  # nothing written behind yet
    await _check_reads(bob, alice_id, sent)

    # The projection runs again from where it stopped: the store catches up, Redis trims,
    # and every read is the same.
    await system.start_consumers(["projection"], positions=from_here)
    await wait_for(lambda: system.caught_up("projection"), within=60)
    stored = await cold.history(conv, 0, 100)
    assert [m.seq for m in stored] == sent
    assert await system.runtime.projection.inbox.head(bob_id) > 0
    assert await system.runtime.projection.sessions.read_seq(bob_id, conv) == sent[4]
    await _check_reads(bob, alice_id, sent)


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.mongo
async def test_what_clients_read_all_the_time_costs_no_store_query(
    small_system: System,
) -> None:
    system = small_system
    await system.start_consumers()
    alice_id, bob_id = await system.user(), await system.user()
    alice, bob = await system.login(alice_id), await system.login(bob_id)
    acks = await _chat(alice, bob_id, MESSAGES)
    sent = [a.server_msg_id for a in acks]
    await wait_for(lambda: len(system.pushes(bob, 0x0301)) == MESSAGES)
    await wait_for(lambda: system.caught_up("projection"), within=60)
    await bob.recent_sessions()  # a user's first read completes its hot state (once)
    database = system.runtime.settings.mongo.database
    ids = [a.client_msg_id for a in acks[-5:]]

    async def commands(call: Any) -> list[str]:
        QUERIES.commands, QUERIES.database = [], database
        try:
            await call
        finally:
            QUERIES.database = ""
        return QUERIES.commands

    assert await commands(bob.recent_sessions()) == []
    assert await commands(bob.history(alice_id, limit=10)) == []  # the newest page
    assert await commands(bob.sync(sent[-1] - 5)) == []  # catching up on the last entries
    assert await commands(bob.messages_by_id(alice_id, ids)) == []
    assert await commands(bob.latest_msg_id(alice_id)) == []
    assert await commands(alice.send_text(bob_id, "one more")) == []
    # Older than Redis keeps: one query, whatever the page.
    assert await commands(bob.history(alice_id, end_msg_id=sent[10], limit=20)) == ["find messages"]
    assert await commands(bob.history(alice_id, end_msg_id=sent[40], limit=30)) == ["find messages"]
    # A sync from the start: the inbox entries and the messages they name, one query each.
    assert sorted(await commands(bob.sync(0, limit=20))) == ["find inbox", "find messages"]


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.mongo
async def test_reads_stay_right_while_the_projection_catches_up(small_system: System) -> None:
    """Reads racing the projection's writes and trims: every sync and history read made
    while it catches up (with small windows, most of each timeline moves below its floor
    under the readers' feet) agrees with what was acked."""
    system = small_system
    from_here, alice_id, _bob_id, bob, sent = await _chat_with_the_projection_stopped(system)
    await _check_reads(bob, alice_id, sent)

    await system.start_consumers(["projection"], positions=from_here)
    rounds = 0
    while rounds == 0 or not await system.caught_up("projection"):
        assert await _all_synced(bob) == sent, f"sync, round {rounds}"
        assert await _all_history(bob, alice_id) == sent, f"history, round {rounds}"
        rounds += 1
    await _check_reads(bob, alice_id, sent)
