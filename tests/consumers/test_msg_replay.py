"""At-least-once without duplicates: an ack only once durable, and replays that change nothing.

- A store write that fails (transiently) holds the sender's ack back until a retry succeeds.
- Consuming ``im.up.msg`` and ``im.fanout`` again from the start of a test's traffic, with
  fresh consumer groups over the same stores, changes no message, inbox entry or session, and
  pushes nothing to anyone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence

from bus.base import TopicPartition
from schemas.codes import SessionType
from schemas.commands import Cmd
from schemas.ids import ConversationId, UserId, c2c_conversation_id, group_conversation_id
from schemas.pb.coffeechat import message_pb2
from store.groups import GroupSpec
from store.messages import InsertResult, MessageStore, StoredMessage
from tests.consumers.conftest import System, drain, next_push
from tests.waiting import wait_for


class HeldStore:
    """A MessageStore whose first insert waits for `release`, then fails like a lost
    connection; later inserts go through."""

    def __init__(self, inner: MessageStore) -> None:
        self._inner = inner
        self.failing = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0

    async def insert_many(self, messages: Sequence[StoredMessage]) -> list[InsertResult]:
        self.calls += 1
        if self.calls == 1:
            self.failing.set()
            await self.release.wait()
            raise ConnectionError("the database went away")
        return await self._inner.insert_many(messages)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


async def test_no_ack_before_the_message_is_stored(system: System) -> None:
    held = HeldStore(system.runtime.messages)
    failing_runtime = dataclasses.replace(system.runtime, messages=held)  # type: ignore[arg-type]
    await system.start_consumers(["msg", "fanout"], runtime=failing_runtime)
    alice, bob = await system.user(), await system.user()
    alice_c = await system.login(alice)
    conversation = c2c_conversation_id(alice, bob)

    sending = asyncio.create_task(alice_c.send_text(bob, "durable?"))
    async with asyncio.timeout(20):
        await held.failing.wait()
    await alice_c.heartbeat()  # a round trip through the gate: no ack overtook it
    assert not sending.done()
    assert await system.runtime.messages.history(conversation, 0, 10) == []

    held.release.set()
    ack = await sending  # the runner retried the batch; now it is stored
    stored = await system.runtime.messages.history(conversation, 0, 10)
    assert [m.seq for m in stored] == [ack.server_msg_id]
    assert held.calls >= 2


async def _state(
    system: System, conversations: Sequence[ConversationId], users: Sequence[UserId]
) -> tuple[object, ...]:
    runtime = system.runtime
    messages = [await runtime.messages.history(c, 0, 1000) for c in conversations]
    inboxes = [(await runtime.inbox.after(u, 0, 1000)).entries for u in users]
    sessions = [await runtime.sessions.recent(u, 0, 1000) for u in users]
    return messages, inboxes, sessions


async def test_replaying_the_topics_changes_nothing_and_delivers_nothing(system: System) -> None:
    topics = ("im.up.msg", "im.fanout")
    start: dict[TopicPartition, int] = await system.positions(topics)
    await system.start_consumers(["msg", "fanout"])
    alice, bob, carol = await system.user(), await system.user(), await system.user()
    group = await system.runtime.groups.create(
        GroupSpec(name="replay", owner_id=alice), [bob, carol], create_key=uuid.uuid4().hex
    )
    group_id = group.group.group_id
    alice_c, bob_c, carol_c = [await system.login(u) for u in (alice, bob, carol)]
    sent = []
    for i in range(5):
        sent.append(await alice_c.send_text(bob, f"c2c {i}"))
        sent.append(await bob_c.send_text(alice, f"reply {i}"))
    resend = sent[0].client_msg_id
    await alice_c.send_text(bob, "c2c 0", client_msg_id=resend)
    for i in range(3):
        await carol_c.send_text(group_id, f"group {i}", session_type=SessionType.GROUP)
    for _ in range(5 + 3):  # bob: alice's five, carol's three
        await next_push(bob_c, Cmd.MSG_DATA)
    await system.stop_consumers()
    conversations = [c2c_conversation_id(alice, bob), group_conversation_id(group_id)]
    users = [alice, bob, carol]
    before = await _state(system, conversations, users)
    for client in (alice_c, bob_c, carol_c):
        await client.heartbeat()
        drain(client)

    await system.start_consumers(["msg", "fanout"], group_suffix=".replay", positions=start)

    async def replayed() -> bool:
        return await system.caught_up("msg") and await system.caught_up("fanout")

    await wait_for(replayed, within=30)
    assert await _state(system, conversations, users) == before
    # Nothing was pushed: the next push each gets is a message sent now.
    fresh = await alice_c.send_text(bob, "after the replay")
    assert [
        msg.server_msg_id
        for msg in [(await next_push(bob_c, Cmd.MSG_DATA)).message]
        if isinstance(msg, message_pb2.MsgData)
    ] == [fresh.server_msg_id]
    group_fresh = await alice_c.send_text(group_id, "group after", session_type=SessionType.GROUP)
    pushed = (await next_push(carol_c, Cmd.MSG_DATA)).message
    assert isinstance(pushed, message_pb2.MsgData)
    assert pushed.server_msg_id == group_fresh.server_msg_id
