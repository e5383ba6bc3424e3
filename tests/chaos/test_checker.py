"""The delivery checker finds each kind of fault it counts, and nothing in a clean run.

The stores are the memory twins where they can hold the situation; a duplicated inbox entry
or a double-stored message cannot happen on them (unique keys), so those cases read from a
plain list of entries — exactly what a broken store would hand back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from schemas.codes import SessionType
from schemas.ids import ConversationId, UserId, c2c_conversation_id
from store.inbox import InboxEntry, InboxPage
from store.memory.inbox import MemoryInboxStore
from store.memory.messages import MemoryMessageStore
from store.messages import StoredMessage
from tests.chaos.checker import (
    DeliveryReport,
    FaultTally,
    check_delivery,
    record_fault_result,
    tally,
)
from tests.chaos.harness import Acked, Ledger, c2c, group

ALICE, BOB, CAROL = UserId(1 << 40 | 1), UserId(1 << 40 | 2), UserId(1 << 40 | 3)
CONV = c2c_conversation_id(ALICE, BOB)


def _message(seq: int, conversation: ConversationId = CONV) -> StoredMessage:
    return StoredMessage(
        conversation=conversation,
        seq=seq,
        client_msg_id=f"m{seq}",
        from_user_id=ALICE,
        to_session_id=BOB,
        session_type=SessionType.SINGLE,
        msg_type=1,
        msg_data=b"x",
        created_ms=1,
    )


def _acked(seq: int) -> Acked:
    target = c2c(ALICE, BOB)
    return Acked(
        sender=ALICE,
        conversation=target.conversation,
        session_type=target.session_type,
        recipients=target.recipients,
        client_msg_id=f"m{seq}",
        server_msg_id=seq,
        attempts=1,
    )


async def _stores(
    seqs: list[int], inbox_order: dict[UserId, list[int]]
) -> tuple[MemoryInboxStore, MemoryMessageStore]:
    messages = MemoryMessageStore()
    await messages.insert_many([_message(s) for s in seqs])
    inbox = MemoryInboxStore()
    for user, order in inbox_order.items():
        await inbox.append_many(
            [
                InboxEntry(user_id=user, inbox_seq=i, message=_message(s))
                for i, s in enumerate(order, 1)
            ]
        )
    return inbox, messages


@dataclass
class _ListInbox:
    """Inboxes as plain lists (may hold what a unique index would refuse)."""

    entries: dict[UserId, list[StoredMessage]] = field(default_factory=dict)

    async def after(self, user_id: UserId, after_seq: int, limit: int) -> InboxPage:
        listed = self.entries.get(user_id, [])[after_seq : after_seq + limit]
        page = [
            InboxEntry(user_id=user_id, inbox_seq=after_seq + i, message=m)
            for i, m in enumerate(listed, 1)
        ]
        return InboxPage(page, has_more=after_seq + limit < len(self.entries.get(user_id, [])))


async def test_a_complete_run_is_clean() -> None:
    ledger = Ledger()
    for seq in range(1, 1201):  # more than one page of history and of inbox
        ledger.record(_acked(seq))
    inbox, messages = await _stores(
        list(range(1, 1201)), {BOB: list(range(1, 1201)), ALICE: list(range(1, 1201))}
    )
    report = await check_delivery(ledger, inbox=inbox, messages=messages)
    assert report.clean, report.summary()
    assert report.acked == 1200


async def test_missing_inbox_entries_and_timeline_messages_are_lost() -> None:
    ledger = Ledger()
    for seq in (1, 2, 3):
        ledger.record(_acked(seq))
    inbox, messages = await _stores([1, 2], {BOB: [1, 3], ALICE: [1, 2, 3]})
    report = await check_delivery(ledger, inbox=inbox, messages=messages)
    # seq 3 missing from the timeline, seq 2 from bob's inbox
    assert (report.lost, report.duplicated, report.out_of_order) == (2, 0, 0), report.summary()


async def test_out_of_order_inbox_entries_are_counted() -> None:
    ledger = Ledger()
    for seq in (1, 2, 3, 4):
        ledger.record(_acked(seq))
    inbox, messages = await _stores([1, 2, 3, 4], {BOB: [1, 3, 2, 4], ALICE: [4, 1, 2, 3]})
    report = await check_delivery(ledger, inbox=inbox, messages=messages)
    assert (report.lost, report.duplicated, report.out_of_order) == (0, 0, 4), report.summary()


async def test_duplicates_in_an_inbox_and_in_acks_are_counted() -> None:
    ledger = Ledger()
    for seq in (1, 2):
        ledger.record(_acked(seq))
    ledger.record(msgspec.structs.replace(_acked(2), server_msg_id=7))  # a resend acked anew
    _, messages = await _stores([1, 2], {})
    inbox = _ListInbox(
        {
            BOB: [_message(1), _message(2), _message(2), _message(2)],
            ALICE: [_message(1), _message(2)],
        }
    )
    report = await check_delivery(ledger, inbox=inbox, messages=messages)
    # m2 acked as 2 and 7 (1); two extra copies of seq 2 in bob's inbox (2); seq 7 in
    # neither inbox (2 lost)
    assert (report.duplicated, report.lost) == (3, 2), report.summary()


async def test_group_messages_must_reach_every_member() -> None:
    target = group(77, [ALICE, BOB, CAROL])
    msg = _message(1, target.conversation)
    ledger = Ledger()
    ledger.record(
        Acked(
            sender=ALICE,
            conversation=target.conversation,
            session_type=target.session_type,
            recipients=target.recipients,
            client_msg_id=msg.client_msg_id,
            server_msg_id=1,
            attempts=2,
        )
    )
    messages = MemoryMessageStore()
    await messages.insert(msg)
    inbox = MemoryInboxStore()
    for user in (ALICE, BOB):
        await inbox.append_many([InboxEntry(user_id=user, inbox_seq=1, message=msg)])
    report = await check_delivery(ledger, inbox=inbox, messages=messages)
    assert report.lost == 1
    assert any(str(CAROL) in d for d in report.details)


def test_the_tally_sums_reports_into_the_last_line() -> None:
    saved = FaultTally(**{f: getattr(tally, f) for f in tally.__struct_fields__})
    try:
        tally.faults = tally.lost = tally.duplicated = tally.out_of_order = tally.reports = 0
        record_fault_result(DeliveryReport(acked=5, lost=1, duplicated=2, out_of_order=3), faults=4)
        record_fault_result(DeliveryReport(acked=5, lost=0, duplicated=0, out_of_order=0), faults=2)
        assert tally.line() == "faults=6 lost=1 duplicated=2 out_of_order=3"
    finally:
        for f in tally.__struct_fields__:
            setattr(tally, f, getattr(saved, f))
