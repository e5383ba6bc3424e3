"""The ``projection`` group: the logs of record written into the document store, behind.

``im.log.msg`` (conversations) and ``im.log.user`` (inboxes, read and delivery marks) are
what the msg, fanout and ack groups append before anyone is answered (`schemas.logs`). This
group turns them into MongoDB documents — ``messages``, ``inbox``, ``sessions``,
``session_reads``, ``deliveries`` and the group members' ack seqs — in large bulk writes,
and only then lets Redis forget: it trims each timeline it wrote to its hot window
(`store.redis.messages`, `store.redis.user_state`). Nothing on the send→ack or send→deliver path
waits for it; readers find in Redis whatever it has not written yet.

Per batch (one log partition, up to `BATCH_MAX` records, in order):

1. decode every record (an undecodable one is poison: `Reject` → DLQ);
2. write, concurrently, one bulk per kind: messages (``insert_many``), inbox entries
   (``append_many``), sessions' last messages (``touch_many``, one upsert per session however
   many entries), read marks, delivery marks (single chats to ``deliveries``, groups to their
   members' ack seqs); then the batch's revocations (rare: one update each). Every write is
   idempotent — inserts skip what exists, the rest are ``$max`` — so a replayed record, or
   the same message logged twice, changes nothing;
3. trim Redis: each conversation up to the highest seq and each inbox up to the highest
   inbox seq this batch wrote (both logs are appended to in seq order per timeline);
4. return; the runner commits.

**Batches.** The batch is large on purpose: the document store is the slow part, and one
bulk of many documents costs about what one of a few costs. An update statement (a
session's last message, a read or delivery mark) is written once per document per batch
however many records touched it, and on FerretDB v1 each costs milliseconds that grow with
the collection (docs/benchmarks.md): so the group lets the broker hold its fetches for up to
`BATCH_LINGER` (a second, or 1 MiB of logs, whichever comes first). A session that gets ten
messages a second costs one update a second, not ten, and the lag grows by at most that
second, which the hot state covers (docs/architecture.md, "Hot state").

Its lag is a first-class figure (`coffeebus topology lag`, ``coffeebus_consumer_lag`` in
/metrics; docs/operations.md says what to alarm on); the logs' retention (topology.yaml) is
far above any lag it may reach.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from bus.base import BatchLinger, Record, Reject, TopicPartition
from consumers.fanout import stored_message
from consumers.registry import consumer_group
from schemas.codes import SessionType
from schemas.errors import EnvelopeError
from schemas.ids import ConversationId, GroupId, UserId, parse_conversation_id
from schemas.logs import LogMark, LogRecord, MessageLog, decode_log
from store.deliveries import DeliveryMark, DeliveryStore
from store.groups import GroupStore, MemberAck
from store.inbox import InboxEntry, InboxStore
from store.messages import MessageStore, SeqConflictError, StoredMessage
from store.sessions import ReadMark, SessionStore, SessionTouch

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["BATCH_MAX", "HotTrim", "ProjectionHandler", "ProjectionStats", "ProjectionTargets"]

log = logging.getLogger(__name__)

#: Records per batch: a log record holds a handler batch of entries already.
BATCH_MAX = 1000
#: How long the broker may hold a fetch to fill a batch (module docstring, "Batches").
BATCH_LINGER = BatchLinger(max_wait_ms=1000, min_bytes=1 << 20)


class HotTrim(Protocol):
    """What the projection tells the hot state once the store has a timeline's entries."""

    async def trim_conversations(self, upto: dict[ConversationId, int]) -> int:
        """The store has each conversation's messages up to the given seq."""
        ...

    async def trim_inboxes(self, upto: dict[UserId, int]) -> int:
        """The store has each user's inbox entries up to the given inbox seq."""
        ...


@dataclass(frozen=True, slots=True)
class ProjectionTargets:
    """The document store the projection writes, and the hot state it trims (None when the
    stores are one and the same, as in the embedded mode)."""

    messages: MessageStore
    inbox: InboxStore
    sessions: SessionStore
    deliveries: DeliveryStore
    groups: GroupStore
    hot: HotTrim | None = None


@dataclass(slots=True)
class ProjectionStats:
    """Counters of one member (monotonic; for metrics, tests and the benchmark)."""

    messages: int = 0
    inbox_entries: int = 0
    reads: int = 0
    deliveries: int = 0
    revocations: int = 0
    trimmed: int = 0


@dataclass(slots=True)
class _Batch:
    messages: list[StoredMessage] = field(default_factory=list)
    revocations: list[tuple[ConversationId, int, UserId, int]] = field(default_factory=list)
    inbox: list[InboxEntry] = field(default_factory=list)
    reads: list[LogMark] = field(default_factory=list)
    deliveries: list[LogMark] = field(default_factory=list)
    conv_upto: dict[ConversationId, int] = field(default_factory=dict)
    inbox_upto: dict[UserId, int] = field(default_factory=dict)

    def add(self, record: LogRecord) -> None:
        if isinstance(record, MessageLog):
            for wire in record.messages:
                msg = stored_message(wire)
                self.messages.append(msg)
                if msg.seq > self.conv_upto.get(msg.conversation, 0):
                    self.conv_upto[msg.conversation] = msg.seq
            for rev in record.revocations:
                self.revocations.append((rev.conversation, rev.seq, rev.by, rev.at_ms))
            return
        for append in record.inbox:
            msg = stored_message(append.message)
            for user, seq in zip(append.users, append.inbox_seqs, strict=True):
                self.inbox.append(InboxEntry(user_id=user, inbox_seq=seq, message=msg))
                if seq > self.inbox_upto.get(user, 0):
                    self.inbox_upto[user] = seq
        self.reads.extend(record.reads)
        self.deliveries.extend(record.deliveries)


class ProjectionHandler:
    """Handles batches of ``im.log.msg`` and ``im.log.user`` (see the module docstring)."""

    #: Records per batch, and how long to let them gather (`coffeebus.roles.ConsumerRole`
    #: reads both).
    batch_max = BATCH_MAX
    batch_linger = BATCH_LINGER

    def __init__(self, targets: ProjectionTargets) -> None:
        self._to = targets
        self.stats = ProjectionStats()

    async def handle(self, records: Sequence[Record]) -> None:
        """Write one partition's batch into the store, then trim Redis (module docstring)."""
        batch = _Batch()
        for record in records:
            try:
                batch.add(decode_log(record.value))
            except EnvelopeError as exc:
                raise Reject(str(exc)) from exc
        await asyncio.gather(*self._writes(batch))
        for conv, seq, by, at_ms in batch.revocations:
            await self._to.messages.mark_revoked(conv, seq, by=by, at_ms=at_ms)
        hot = self._to.hot
        if hot is not None and (batch.conv_upto or batch.inbox_upto):
            trimmed = await asyncio.gather(
                hot.trim_conversations(batch.conv_upto), hot.trim_inboxes(batch.inbox_upto)
            )
            self.stats.trimmed += sum(trimmed)
        s = self.stats
        s.messages += len(batch.messages)
        s.inbox_entries += len(batch.inbox)
        s.reads += len(batch.reads)
        s.deliveries += len(batch.deliveries)
        s.revocations += len(batch.revocations)

    def _writes(self, batch: _Batch) -> list[Awaitable[object]]:
        to = self._to
        writes: list[Awaitable[object]] = []
        if batch.messages:
            writes.append(self._messages(batch.messages))
        if batch.inbox:
            writes.append(to.inbox.append_many(batch.inbox))
            writes.append(
                to.sessions.touch_many([SessionTouch(e.user_id, e.message) for e in batch.inbox])
            )
        if batch.reads:
            writes.append(
                to.sessions.mark_read_many(
                    [ReadMark(m.user_id, m.conversation, m.seq) for m in batch.reads]
                )
            )
        singles = [m for m in batch.deliveries if not _is_group(m.conversation)]
        groups = [m for m in batch.deliveries if _is_group(m.conversation)]
        if singles:
            writes.append(
                to.deliveries.mark_delivered_many(
                    [DeliveryMark(m.user_id, m.conversation, m.seq, m.at_ms) for m in singles]
                )
            )
        if groups:
            writes.append(
                to.groups.record_acks(
                    [
                        MemberAck(_group_of(m.conversation), m.user_id, m.seq, m.at_ms)
                        for m in groups
                    ]
                )
            )
        return writes

    async def _messages(self, messages: list[StoredMessage]) -> None:
        try:
            await self._to.messages.insert_many(messages)
        except SeqConflictError as exc:
            # Two messages logged with one seq: the single-writer invariant was broken
            # upstream. The others are written; holding the partition would not mend it.
            log.error("projection: %s (the other messages of the batch are written)", exc)

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def close(self) -> None:
        """Nothing is buffered."""


def _is_group(conversation: ConversationId) -> bool:
    return parse_conversation_id(conversation)[0] == SessionType.GROUP


def _group_of(conversation: ConversationId) -> GroupId:
    return GroupId(parse_conversation_id(conversation)[1][0])


@consumer_group("projection")
def build(runtime: Runtime) -> ProjectionHandler:
    """The projection onto the runtime's document store."""
    return ProjectionHandler(runtime.projection)
