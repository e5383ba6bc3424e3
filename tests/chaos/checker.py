"""The delivery checker: proves that every acked message of a `Ledger` arrived, once, in order.

For every acked message (DESIGN invariants 1, 3, 5):

- its conversation timeline (`MessageStore`, what the sender's history shows) holds it
  exactly once, with the acked server_msg_id;
- every recipient's inbox (`InboxStore`: the receiver and the sender's other devices for
  c2c, every member for a group) holds it exactly once;
- in every such inbox, the entries of its conversation follow the conversation's seq order.

`check_delivery` reads the stores once and returns a `DeliveryReport`; `settle` repeats the
check until nothing is missing any more (fan-out still catching up after a fault) or its time
is up, and returns the last report. `check_sync` checks the same from the clients' side: what
each user's client gets by catching up with sync (0x0803) from inbox seq 0. Fault tests
hand the report to `record_fault_result`, which the chaos conftest sums into `make chaos`'s
last line::

    faults=N lost=0 duplicated=0 out_of_order=0

Counting: *lost* is one per (message, place) where the message is missing — a recipient's
inbox, or the conversation timeline; *duplicated* one per extra copy (a second inbox entry
of one message, a client_msg_id stored twice, a resend acked with another server_msg_id);
*out_of_order* one per inbox entry whose conversation seq is below one listed before it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Protocol

import msgspec

from schemas.ids import ConversationId, UserId, conversation_id
from sdk.client import Client
from sdk.errors import RequestTimeoutError
from store.inbox import InboxPage
from store.messages import StoredMessage
from tests.chaos.harness import Acked, Ledger

__all__ = [
    "DeliveryReport",
    "FaultTally",
    "InboxReader",
    "TimelineReader",
    "check_delivery",
    "check_sync",
    "record_fault_result",
    "settle",
    "tally",
]

_PAGE = 500
MAX_DETAILS = 40


class InboxReader(Protocol):
    """What the checker reads of inboxes (`store.inbox.InboxStore` has it)."""

    async def after(self, user_id: UserId, after_seq: int, limit: int) -> InboxPage: ...


class TimelineReader(Protocol):
    """What the checker reads of conversations (`store.messages.MessageStore` has it)."""

    async def history(
        self, conversation: ConversationId, end_seq: int, limit: int
    ) -> list[StoredMessage]: ...


class DeliveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the checker found; `details` names the first problems (at most `MAX_DETAILS`)."""

    acked: int
    lost: int
    duplicated: int
    out_of_order: int
    details: tuple[str, ...] = ()
    resends: int = 0
    """Sends repeated with the same client_msg_id during the run (information only)."""

    @property
    def clean(self) -> bool:
        """Nothing lost, duplicated or out of order."""
        return self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0

    def summary(self) -> str:
        """One line with the counts, then the details."""
        head = (
            f"acked={self.acked} resends={self.resends} lost={self.lost} "
            f"duplicated={self.duplicated} out_of_order={self.out_of_order}"
        )
        return "\n".join([head, *self.details])


async def _inbox(inbox: InboxReader, user: UserId) -> list[StoredMessage]:
    messages: list[StoredMessage] = []
    after = 0
    while True:
        page = await inbox.after(user, after, _PAGE)
        messages.extend(e.message for e in page.entries)
        if not page.has_more or not page.entries:
            return messages
        after = page.entries[-1].inbox_seq


async def read_timeline(
    messages: TimelineReader, conversation: ConversationId
) -> list[StoredMessage]:
    """The whole conversation, ascending (history pages backwards from the newest)."""
    pages: list[list[StoredMessage]] = []
    end = 0
    while True:
        page = await messages.history(conversation, end, _PAGE)
        if page:
            pages.append(page)
        if len(page) < _PAGE:
            return [m for p in reversed(pages) for m in p]
        end = page[0].seq


class _Findings:
    def __init__(self) -> None:
        self.lost = self.duplicated = self.out_of_order = 0
        self.details: list[str] = []

    def report(self, ledger: Ledger | Sequence[Acked]) -> DeliveryReport:
        acked = ledger.acked if isinstance(ledger, Ledger) else ledger
        return DeliveryReport(
            acked=len({(a.conversation, a.client_msg_id) for a in acked}),
            lost=self.lost,
            duplicated=self.duplicated,
            out_of_order=self.out_of_order,
            details=tuple(self.details),
            resends=ledger.resends if isinstance(ledger, Ledger) else 0,
        )

    def note(self, kind: str, text: str, n: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + n)
        if len(self.details) < MAX_DETAILS:
            self.details.append(f"{kind}: {text}")


def _check_acks(acked: Sequence[Acked], found: _Findings) -> dict[tuple[str, str], int]:
    """One server_msg_id per (conversation, client_msg_id); a second one is a duplicate."""
    seqs: dict[tuple[str, str], int] = {}
    for a in acked:
        key = (a.conversation, a.client_msg_id)
        first = seqs.setdefault(key, a.server_msg_id)
        if first != a.server_msg_id:
            found.note(
                "duplicated",
                f"{a.client_msg_id} in {a.conversation} acked as {first} and {a.server_msg_id}",
            )
    return seqs


async def _check_timelines(
    acked: Sequence[Acked], messages: TimelineReader, found: _Findings
) -> None:
    by_conversation: dict[ConversationId, dict[str, int]] = defaultdict(dict)
    for a in acked:
        by_conversation[a.conversation].setdefault(a.client_msg_id, a.server_msg_id)
    timelines = await asyncio.gather(*(read_timeline(messages, c) for c in by_conversation))
    for (conversation, expected), timeline in zip(by_conversation.items(), timelines, strict=True):
        stored = Counter(m.client_msg_id for m in timeline)
        seq_of = {m.client_msg_id: m.seq for m in timeline}
        for client_msg_id, seq in expected.items():
            copies = stored[client_msg_id]
            if copies == 0:
                found.note("lost", f"{client_msg_id} (seq {seq}) not in {conversation}'s timeline")
            elif copies > 1:
                found.note(
                    "duplicated", f"{client_msg_id} stored {copies}x in {conversation}", copies - 1
                )
            elif seq_of[client_msg_id] != seq:
                found.note(
                    "lost",
                    f"{client_msg_id} in {conversation} stored as seq {seq_of[client_msg_id]}, "
                    f"acked as {seq}",
                )


Listing = list[tuple[ConversationId, int]]
"""A user's inbox as (conversation, conversation seq) pairs, in inbox order."""


def _check_listings(
    acked: Sequence[Acked], listings: dict[UserId, Listing], found: _Findings, where: str
) -> None:
    wanted: dict[UserId, set[tuple[ConversationId, int]]] = defaultdict(set)
    for a in acked:
        for user in a.recipients:
            if user in listings:
                wanted[user].add((a.conversation, a.server_msg_id))
    for user, entries in listings.items():
        copies = Counter(entries)
        for conversation, seq in sorted(wanted[user]):
            n = copies[(conversation, seq)]
            if n == 0:
                found.note("lost", f"seq {seq} of {conversation} not in {user}'s {where}")
            elif n > 1:
                found.note(
                    "duplicated", f"seq {seq} of {conversation} {n}x in {user}'s {where}", n - 1
                )
        conversations = {c for c, _ in wanted[user]}
        highest: dict[ConversationId, int] = {}
        for conversation, seq in entries:
            if conversation not in conversations:
                continue
            top = highest.get(conversation, 0)
            if seq < top:
                found.note(
                    "out_of_order", f"{user}'s {where} has seq {seq} of {conversation} after {top}"
                )
            highest[conversation] = max(top, seq)


async def _check_inboxes(acked: Sequence[Acked], inbox: InboxReader, found: _Findings) -> None:
    users = list(dict.fromkeys(u for a in acked for u in a.recipients))
    inboxes = await asyncio.gather(*(_inbox(inbox, u) for u in users))
    listings = {
        user: [(m.conversation, m.seq) for m in entries]
        for user, entries in zip(users, inboxes, strict=True)
    }
    _check_listings(acked, listings, found, "inbox")


async def check_delivery(
    ledger: Ledger | Sequence[Acked], *, inbox: InboxReader, messages: TimelineReader
) -> DeliveryReport:
    """Check every acked message against the stores once (module docstring)."""
    acked = ledger.acked if isinstance(ledger, Ledger) else list(ledger)
    found = _Findings()
    _check_acks(acked, found)
    await _check_timelines(acked, messages, found)
    await _check_inboxes(acked, inbox, found)
    return found.report(ledger)


async def check_sync(
    ledger: Ledger | Sequence[Acked], clients: dict[UserId, Client]
) -> DeliveryReport:
    """Check what each user's client gets by catching up with sync (0x0803 / 0x0804, served by
    the query group) from inbox seq 0: every acked message addressed to the user once, in
    conversation order — what a device that was away sees after a reconnect. Requests that
    time out are sent again."""
    acked = ledger.acked if isinstance(ledger, Ledger) else list(ledger)
    found = _Findings()
    listings = {user: await _synced(client) for user, client in clients.items()}
    _check_listings(acked, listings, found, "sync")
    return found.report(ledger)


async def _synced(client: Client) -> Listing:
    listing: Listing = []
    after = 0
    while True:
        try:
            page = await client.sync(after, limit=_PAGE)
        except RequestTimeoutError:
            continue  # a killed query member: its partitions move on, ask again
        for entry in page.entries:
            msg = entry.msg
            conversation = conversation_id(
                msg.session_type, UserId(msg.from_user_id), msg.to_session_id
            )
            listing.append((conversation, msg.server_msg_id))
        if not page.has_more or not page.entries:
            return listing
        after = page.entries[-1].seq


async def settle(
    ledger: Ledger | Sequence[Acked],
    *,
    inbox: InboxReader,
    messages: TimelineReader,
    within: float = 60.0,
    interval: float = 0.25,
) -> DeliveryReport:
    """`check_delivery` until nothing is lost or `within` seconds pass; the last report.

    Acked messages may still be on their way to inboxes (a restarted consumer replaying its
    uncommitted records); losses that remain after `within` are real. Duplicates and order
    faults do not heal, so the check stops at the first report without losses.
    """
    deadline = time.monotonic() + within
    while True:
        report = await check_delivery(ledger, inbox=inbox, messages=messages)
        if report.lost == 0 or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(interval)  # polling external state: there is no event to await


# -- the `make chaos` tally --------------------------------------------------------------------


class FaultTally(msgspec.Struct, kw_only=True):
    """Sums of the reports of every fault test of a pytest run."""

    faults: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    reports: int = 0

    def line(self) -> str:
        """The line `make chaos` prints last."""
        return (
            f"faults={self.faults} lost={self.lost} duplicated={self.duplicated} "
            f"out_of_order={self.out_of_order}"
        )


#: The run's tally (one pytest process; tests/chaos/conftest.py prints it at the end).
tally = FaultTally()


def record_fault_result(report: DeliveryReport, *, faults: int) -> None:
    """Add a fault test's checker report to the run's tally; `faults` is how many faults the
    test injected (kills, restarts). Call it before asserting on the report, so that a
    failing test's counts are in the summary line too."""
    if faults < 0:
        raise ValueError("faults must be >= 0")
    tally.faults += faults
    tally.lost += report.lost
    tally.duplicated += report.duplicated
    tally.out_of_order += report.out_of_order
    tally.reports += 1
