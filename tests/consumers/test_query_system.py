"""The query group end to end: SDK → gate → im.up.query → query handler → gate → SDK.

Messages are written with `Seeder` (what msg + fanout write), so these tests pin the read
side — exact unread counts across seq gaps, paging, lookups, sync, refusals — on the embedded
wiring and on the real services.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import cast

import pytest

from schemas.codes import ClientType, ExtResultCode, MsgStatus, SessionType
from schemas.commands import Cmd
from schemas.ids import UserId, c2c_conversation_id
from schemas.pb.coffeechat import base_pb2, list_pb2
from sdk.errors import ServerError
from store.deliveries import DeliveryMark
from store.inbox import InboxPage, InboxStore
from store.sessions import ReadMark
from tests.consumers.conftest import Seeder, System
from tests.waiting import wait_for


async def test_session_list_has_exact_unread_counts_and_the_latest_message(
    system: System,
) -> None:
    await system.start_consumers()
    alice, bob, carol = await system.user(), await system.user(), await system.user()
    seed = Seeder(system.runtime)
    for gap in (0, 3, 0, 7):  # seq gaps, as after a change of owner
        await seed.message(bob, alice, gap=gap)
    await seed.message(alice, bob)  # one of alice's own: never unread for her
    last = await seed.message(carol, alice, text="latest")
    sdk = await system.login(alice)

    rsp = await sdk.recent_sessions()

    by_peer = {s.session_id: s for s in rsp.contact_session_list}
    assert set(by_peer) == {bob, carol}
    assert by_peer[bob].unread_cnt == 4
    assert by_peer[carol].unread_cnt == 1
    assert rsp.unread_counts == 5
    info = by_peer[carol]
    assert info.msg_id == last.client_msg_id
    assert info.server_msg_id == last.seq
    assert info.msg_data == b"latest"
    assert info.msg_from_user_id == carol
    assert SessionType(info.session_type) is SessionType.SINGLE
    assert MsgStatus(info.msg_status) is MsgStatus.UNREAD
    # Most recently changed first.
    assert [s.session_id for s in rsp.contact_session_list] == [carol, bob]


async def test_history_pages_backwards_and_returns_ascending(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    seed = Seeder(system.runtime)
    sent = [
        await seed.message(bob if i % 2 else alice, bob if not i % 2 else alice, gap=i % 3)
        for i in range(25)
    ]
    seqs = [m.seq for m in sent]
    sdk = await system.login(alice)

    newest = await sdk.history(bob, limit=10)
    assert [m.server_msg_id for m in newest.msg_list] == seqs[-10:]
    older = await sdk.history(bob, end_msg_id=seqs[-10], limit=10)  # exclusive bound
    assert [m.server_msg_id for m in older.msg_list] == seqs[-20:-10]
    rest = await sdk.history(bob, end_msg_id=seqs[-20], limit=10)
    assert [m.server_msg_id for m in rest.msg_list] == seqs[:5]
    default = await sdk.history(bob, limit=0)  # 0 = the default page of 20
    assert [m.server_msg_id for m in default.msg_list] == seqs[-20:]
    first = newest.msg_list[-1]
    assert first.client_msg_id == sent[-1].client_msg_id
    assert first.from_user_id == sent[-1].from_user_id
    with pytest.raises(ServerError) as too_many:
        await sdk.history(bob, limit=100)
    assert too_many.value.code is ExtResultCode.INVALID_PARAMETER
    assert "99" in too_many.value.text


async def test_my_messages_show_how_far_the_peer_has_them(system: System) -> None:
    """History and by-id give the sender's own messages of a single chat the peer's receipts
    (docs/protocol-extensions.md, "Message status"): READ up to the peer's read seq, RECEIPT
    up to its delivery mark, SENT above; the peer's own messages keep the reader's view."""
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    seed = Seeder(system.runtime)
    mine = [await seed.message(alice, bob, gap=i % 2) for i in range(3)]
    theirs = await seed.message(bob, alice)
    mine.append(await seed.message(alice, bob))
    conv = c2c_conversation_id(alice, bob)
    await system.runtime.sessions.advance_reads([ReadMark(bob, conv, mine[0].seq)])
    await system.runtime.deliveries.mark_delivered_many([DeliveryMark(bob, conv, mine[2].seq, 1)])
    sdk = await system.login(alice)

    history = await sdk.history(bob)
    by_seq = {m.server_msg_id: MsgStatus(m.msg_status) for m in history.msg_list}
    assert [by_seq[m.seq] for m in mine] == [
        MsgStatus.READ,
        MsgStatus.RECEIPT,
        MsgStatus.RECEIPT,
        MsgStatus.SENT,
    ]
    assert by_seq[theirs.seq] is MsgStatus.UNREAD  # alice has not read bob's
    found = await sdk.messages_by_id(bob, [mine[1].client_msg_id, mine[3].client_msg_id])
    assert [MsgStatus(m.msg_status) for m in found.msg_list] == [MsgStatus.RECEIPT, MsgStatus.SENT]

    # A note to self and a group have no single peer: SENT.
    note = await seed.message(alice, alice)
    (only,) = (await sdk.history(alice)).msg_list
    assert (only.server_msg_id, MsgStatus(only.msg_status)) == (note.seq, MsgStatus.SENT)


async def test_latest_id_by_id_and_user_list(system: System) -> None:
    await system.start_consumers()
    alice = await system.user()
    bob, carol = await system.user(nick="bb"), await system.user(nick="cc")
    seed = Seeder(system.runtime)
    first = await seed.message(bob, alice)
    latest = await seed.message(alice, bob, gap=2)
    await seed.message(carol, alice)
    sdk = await system.login(alice)

    assert (await sdk.latest_msg_id(bob)).latest_msg_id == latest.client_msg_id
    assert (await sdk.latest_msg_id(UserId(System.new_uid()))).latest_msg_id == ""
    found = await sdk.messages_by_id(bob, [latest.client_msg_id, "nope", first.client_msg_id])
    assert [m.server_msg_id for m in found.msg_list] == [first.seq, latest.seq]
    users = await sdk.user_list()
    assert {u.user_id: u.nick_name for u in users.user_info_list} == {
        bob: "bb",
        carol: "cc",
    }


async def test_sync_pages_the_inbox_with_has_more(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    seed = Seeder(system.runtime)
    sent = [await seed.message(bob, alice, gap=i % 2) for i in range(7)]
    sdk = await system.login(alice)

    page = await sdk.sync(0, limit=3)
    assert page.has_more
    assert [e.msg.server_msg_id for e in page.entries] == [m.seq for m in sent[:3]]
    seen = list(page.entries)
    while page.has_more:
        page = await sdk.sync(seen[-1].seq, limit=3)
        seen.extend(page.entries)
    assert [e.msg.client_msg_id for e in seen] == [m.client_msg_id for m in sent]
    assert page.latest_seq == seen[-1].seq
    assert all(a.seq < b.seq for a, b in itertools.pairwise(seen))


async def test_nobody_answers_about_another_user(system: System) -> None:
    await system.start_consumers()
    alice, bob, mallory = await system.user(), await system.user(), await system.user()
    await Seeder(system.runtime).message(bob, alice, text="secret")
    sdk = await system.login(mallory)

    req = list_pb2.RecentContactSessionReq(user_id=alice)
    with pytest.raises(ServerError) as refused:
        await sdk.request(Cmd.RECENT_SESSION_REQ, req)
    assert refused.value.code is ExtResultCode.FORBIDDEN
    history = list_pb2.GetMsgListReq(
        user_id=alice, session_type=base_pb2.SESSION_TYPE_SINGLE, session_id=bob, limit_count=20
    )
    with pytest.raises(ServerError) as again:
        await sdk.request(Cmd.MSG_LIST_REQ, history)
    assert again.value.code is ExtResultCode.FORBIDDEN
    # Asking as herself about bob's chat gives mallory her own (empty) chat with bob.
    assert list((await sdk.history(bob)).msg_list) == []
    assert list((await sdk.recent_sessions()).contact_session_list) == []


class _CountingInbox:
    """The runtime's inbox, counting the sync pages read from it."""

    def __init__(self, inner: InboxStore) -> None:
        self._inner = inner
        self.pages = 0

    async def after(self, user_id: UserId, after_seq: int, limit: int) -> InboxPage:
        self.pages += 1
        return await self._inner.after(user_id, after_seq, limit)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


async def test_identical_requests_queued_together_are_answered_from_one_read(
    system: System,
) -> None:
    """Requests that queued up behind a slow or restarting query member — a client polling
    sync, two devices asking the same — cost one store read per distinct request, and each
    is still answered to its own connection and seq."""
    alice, bob = await system.user(), await system.user()
    seed = Seeder(system.runtime)
    sent = [await seed.message(bob, alice) for _ in range(3)]
    topics = system.topology.group("query").topics
    before = await system.positions(topics)
    phone = await system.login(alice, client_type=ClientType.IOS)
    pc = await system.login(alice, client_type=ClientType.MAC_OS)

    asking = [
        asyncio.create_task(phone.sync(0, limit=10)),
        asyncio.create_task(pc.sync(0, limit=10)),
        asyncio.create_task(phone.sync(0, limit=10)),
        asyncio.create_task(phone.sync(sent[0].seq, limit=10)),  # another request
    ]

    async def queued() -> bool:
        ends = await system.positions(topics)
        return sum(ends.values()) - sum(before.values()) == len(asking)

    await wait_for(queued, within=20)
    inbox = _CountingInbox(system.runtime.inbox)
    runtime = dataclasses.replace(system.runtime, inbox=cast(InboxStore, inbox))
    await system.start_consumers(["query"], runtime=runtime, positions=before)
    answers = await asyncio.gather(*asking)

    everything = [m.client_msg_id for m in sent]
    assert [[e.msg.client_msg_id for e in a.entries] for a in answers] == [
        everything,
        everything,
        everything,
        everything[1:],
    ]
    assert inbox.pages == 2
