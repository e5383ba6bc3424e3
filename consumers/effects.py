"""What a consumer handler produces besides its store writes: records to publish.

Handlers never publish as they go. They collect `Effects` — entries for the logs of record
(``im.log.msg``, ``im.log.user``: `schemas.logs`), responses to a request's connection,
pushes to users' connections grouped per gate, records for other topics — and publish them
in `Effects.flush` *after* their hot-state writes and *before* the batch is committed, in two
steps: first the log records, awaited (every in-sync replica has them), then everything
else. That order is what the invariants of docs/architecture.md need: an ack or a push
leaves only once what it reports is in the replicated log (4), and nothing is committed that
was not handed on (3, 5). A replayed batch produces its effects again; every receiver of
them is idempotent or harmless to repeat (a log entry the projection already wrote, an ack,
a response, a push the client dedupes by ``server_msg_id``).

Log entries are grouped into one record per log partition (the partition of each entry's
key, as the bus maps it), cut to `schemas.logs.RECORD_BUDGET_BYTES`, in the order the handler
added them — so one conversation's (one user's) entries keep their order.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

from google.protobuf.message import Message

from bus.base import Bus, Outgoing, UnknownTopicError
from bus.partitioner import partition_for_key
from bus.topology import Topology
from schemas.codes import ExtResultCode
from schemas.commands import Cmd, spec
from schemas.envelope import (
    Deliver,
    GateBatch,
    GateRecord,
    Origin,
    Reply,
    Target,
    encode_gate_record,
    now_ms,
)
from schemas.events import FanoutMessage, recipient_key
from schemas.ids import ConnId, GateId, TraceId, UserId
from schemas.logs import (
    InboxAppend,
    LogMark,
    MessageLog,
    Revocation,
    UserLog,
    chunks,
    encode_log,
    message_bytes,
)
from schemas.pb.coffeebus import ext_pb2
from store.routes import Route

__all__ = ["Effects"]

log = logging.getLogger(__name__)


class Effects:
    """Records one handler call wants published, in order."""

    __slots__ = ("_gate_items", "_gate_topics", "_log", "_pushes", "_topology", "outgoing")

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self.outgoing: list[Outgoing] = []
        # (gate, cmd, body, trace) -> targets: one Deliver per gate and distinct push.
        self._pushes: dict[tuple[str, int, bytes, str], list[Target]] = defaultdict(list)
        # (gate topic, partition) -> (key, items): replies, then Delivers, for one record.
        self._gate_items: dict[tuple[str, int], tuple[bytes, list[Reply | Deliver]]] = {}
        # gate id -> (topic, partitions): a template instance costs a struct per call.
        self._gate_topics: dict[str, tuple[str, int]] = {}
        self._log = _LogEntries()

    def __len__(self) -> int:
        return len(self.outgoing) + len(self._pushes) + len(self._gate_items) + len(self._log)

    # --- the logs of record ------------------------------------------------------------------

    def log_message(self, message: FanoutMessage) -> None:
        """Append a sequenced message to its conversation's log (``im.log.msg``)."""
        self._log.messages.append(message)

    def log_revocation(self, revocation: Revocation) -> None:
        """Append a revocation to its conversation's log (``im.log.msg``)."""
        self._log.revocations.append(revocation)

    def log_inbox(
        self, message: FanoutMessage, users: Sequence[UserId], inbox_seqs: Sequence[int]
    ) -> None:
        """Append `message` to the inboxes of `users` at `inbox_seqs` (``im.log.user``)."""
        self._log.inbox.append((message, tuple(users), tuple(inbox_seqs)))

    def log_read(self, mark: LogMark) -> None:
        """Log a read mark (``im.log.user``)."""
        self._log.reads.append(mark)

    def log_delivery(self, mark: LogMark) -> None:
        """Log a delivery mark (``im.log.user``)."""
        self._log.deliveries.append(mark)

    def publish(self, topic: str, value: bytes, *, key: bytes | None = None) -> None:
        """A record for a declared topic (raises for an undeclared name)."""
        self._topology.topic(topic)
        self.outgoing.append(Outgoing(topic=topic, value=value, key=key))

    def to_gate(self, gate_id: str, record: GateRecord, *, key: bytes) -> None:
        """A record of its own for a gate's topic (a room's delivery, keyed by room id: a
        room's records stay in one partition of the gate topic, in order)."""
        topic, _ = self._gate_topic(gate_id)
        self.outgoing.append(Outgoing(topic=topic, value=encode_gate_record(record), key=key))

    def reply(self, origin: Origin, cmd: Cmd, body: Message, trace_id: TraceId) -> None:
        """Answer the request that came from `origin` (echoing its frame seq)."""
        expected = spec(cmd).message
        if type(body) is not expected:
            raise TypeError(f"{cmd.name} carries {expected.__name__}, not {type(body).__name__}")
        record = Reply(
            target=Target(conn_id=origin.conn_id, user_id=origin.user_id),
            cmd=cmd,
            seq=origin.frame_seq,
            body=body.SerializeToString(),
            trace_id=trace_id,
            ts_ms=now_ms(),
        )
        self._gate_item(origin.gate_id, origin.conn_id, record)

    def error(
        self,
        origin: Origin,
        request_cmd: int,
        code: ExtResultCode,
        text: str,
        trace_id: TraceId,
    ) -> None:
        """Reject the request that came from `origin` with an ErrorRsp (0x0802)."""
        body = ext_pb2.ErrorRsp(
            request_command_id=request_cmd,
            result_code=ext_pb2.ExtResultCode.ValueType(code),
            text=text,
        )
        self.reply(origin, Cmd.ERROR_RSP, body, trace_id)

    def push(
        self,
        user_id: UserId,
        routes: Iterable[Route],
        cmd: Cmd,
        body: bytes,
        trace_id: TraceId,
        *,
        skip: tuple[GateId, ConnId] | None = None,
    ) -> int:
        """Push a server command to each of the user's connections (but `skip`).

        Pushes of the same body to many users on one gate travel as one `Deliver` record.
        Returns how many connections it addressed.
        """
        count = 0
        for route in routes:
            if skip is not None and (route.gate_id, route.conn_id) == skip:
                continue
            key = (route.gate_id, int(cmd), body, trace_id)
            self._pushes[key].append(Target(conn_id=route.conn_id, user_id=user_id))
            count += 1
        return count

    async def flush(self, bus: Bus) -> None:
        """Publish the log records, then `records()` in one batch; records for a gate whose
        topic is gone are dropped.

        The log records go first and are awaited: nothing else is sent before every
        in-sync replica has them.

        A gate topic disappears when its gate is retired (or a test tears it down). The
        connections it served are gone with it: their clients reconnect elsewhere and catch
        up by sync, so a reply or push addressed there has no reader. Failing the batch
        instead would dead-letter the record and lose everything else it produced — the
        fan-out of a stored message among it. Any other unknown topic is a deployment error
        and raises.
        """
        if self._log:
            await bus.publish_batch(await self._log.records(bus, self._topology))
            self._log = _LogEntries()
        pending = self.records()
        gate = self._topology.template("gate")
        while pending:
            try:
                await bus.publish_batch(pending)
                return
            except UnknownTopicError as exc:
                if self._topology.template_for(exc.topic) != gate:
                    raise
                kept = [record for record in pending if record.topic != exc.topic]
                log.warning(
                    "gate topic %s does not exist (gate retired?): dropped %d record(s) for "
                    "its connections, publishing the other %d",
                    exc.topic,
                    len(pending) - len(kept),
                    len(kept),
                )
                pending = kept

    def records(self) -> list[Outgoing]:
        """Everything to publish: the direct records, then one record per gate-topic
        partition with its replies and the Delivers of the pushes, in that order.

        A push becomes one Deliver per gate *partition* and body: every record for one
        connection is keyed by it, so it travels in one partition of the gate topic and the
        connection gets them in the order they were published — a keyless Deliver could
        overtake an earlier one on another partition, and a conversation's messages would
        arrive out of order. What one handler call has for one partition travels as one
        record (a `GateBatch` when it is more than one item): the gate applies its items in
        order, and a busy gate costs a record per batch rather than per frame.
        """
        ts = now_ms()
        for (gate_id, cmd, body, trace_id), targets in self._pushes.items():
            topic, partitions = self._gate_topic(gate_id)
            by_partition: dict[int, list[Target]] = defaultdict(list)
            for target in targets:
                by_partition[partition_for_key(_conn_key(target.conn_id), partitions)].append(
                    target
                )
            for partition, group in by_partition.items():
                record = Deliver(
                    cmd=cmd, body=body, targets=tuple(group), trace_id=TraceId(trace_id), ts_ms=ts
                )
                key = _conn_key(group[0].conn_id)
                self._gate_items.setdefault((topic, partition), (key, []))[1].append(record)
        self._pushes.clear()
        out = list(self.outgoing)
        for (topic, _), (key, items) in self._gate_items.items():
            item: GateRecord = items[0] if len(items) == 1 else GateBatch(tuple(items))
            out.append(Outgoing(topic=topic, value=encode_gate_record(item), key=key))
        return out

    def _gate_topic(self, gate_id: str) -> tuple[str, int]:
        found = self._gate_topics.get(gate_id)
        if found is None:
            spec = self._topology.gate_topic(gate_id)
            found = self._gate_topics[gate_id] = (spec.name, spec.partitions)
        return found

    def _gate_item(self, gate_id: GateId, conn_id: ConnId, item: Reply) -> None:
        # Gate topics are instances of the declared template; the key keeps one connection's
        # records in one partition, in order.
        topic, partitions = self._gate_topic(gate_id)
        key = _conn_key(conn_id)
        slot = (topic, partition_for_key(key, partitions))
        self._gate_items.setdefault(slot, (key, []))[1].append(item)


def _conn_key(conn_id: int) -> bytes:
    """The gate-topic key of a connection (as the gate keys its own records)."""
    return b"%d" % conn_id


MESSAGE_LOG_TOPIC = "im.log.msg"
USER_LOG_TOPIC = "im.log.user"


class _LogEntries:
    """Entries for the logs of record, kept in the order they were added."""

    __slots__ = ("deliveries", "inbox", "messages", "reads", "revocations")

    def __init__(self) -> None:
        self.messages: list[FanoutMessage] = []
        self.revocations: list[Revocation] = []
        self.inbox: list[tuple[FanoutMessage, tuple[UserId, ...], tuple[int, ...]]] = []
        self.reads: list[LogMark] = []
        self.deliveries: list[LogMark] = []

    def __len__(self) -> int:
        return (
            len(self.messages)
            + len(self.revocations)
            + len(self.inbox)
            + len(self.reads)
            + len(self.deliveries)
        )

    async def records(self, bus: Bus, topology: Topology) -> list[Outgoing]:
        """One record per log partition (cut by size), keyed by its first entry's key."""
        out: list[Outgoing] = []
        if self.messages or self.revocations:
            topic = topology.topic(MESSAGE_LOG_TOPIC).name
            count = await bus.partitions_for(topic)
            parts: dict[int, tuple[list[FanoutMessage], list[Revocation], bytes]] = {}
            for msg in self.messages:
                key = msg.conversation.encode()
                parts.setdefault(partition_for_key(key, count), ([], [], key))[0].append(msg)
            for rev in self.revocations:
                key = rev.conversation.encode()
                parts.setdefault(partition_for_key(key, count), ([], [], key))[1].append(rev)
            ts = now_ms()
            for messages, revocations, key in parts.values():
                for batch in chunks(messages, message_bytes):
                    logged = MessageLog(tuple(batch), (), ts)
                    out.append(Outgoing(topic, encode_log(logged), key=key))
                if revocations:
                    logged = MessageLog((), tuple(revocations), ts)
                    out.append(Outgoing(topic, encode_log(logged), key=key))
        if self.inbox or self.reads or self.deliveries:
            topic = topology.topic(USER_LOG_TOPIC).name
            count = await bus.partitions_for(topic)
            users: dict[int, tuple[list[InboxAppend], list[LogMark], list[LogMark], bytes]] = {}

            def part(user: int) -> tuple[list[InboxAppend], list[LogMark], list[LogMark], bytes]:
                key = recipient_key(user)
                return users.setdefault(partition_for_key(key, count), ([], [], [], key))

            for message, who, seqs in self.inbox:
                split: dict[int, tuple[list[UserId], list[int]]] = {}
                for user, seq in zip(who, seqs, strict=True):
                    p = partition_for_key(recipient_key(user), count)
                    group = split.setdefault(p, ([], []))
                    group[0].append(user)
                    group[1].append(seq)
                for user_ids, inbox_seqs in split.values():
                    part(user_ids[0])[0].append(
                        InboxAppend(message, tuple(user_ids), tuple(inbox_seqs))
                    )
            for mark in self.reads:
                part(mark.user_id)[1].append(mark)
            for mark in self.deliveries:
                part(mark.user_id)[2].append(mark)
            ts = now_ms()
            for appends, reads, deliveries, key in users.values():
                for run in chunks(appends, _append_bytes):
                    record = UserLog(tuple(run), (), (), ts)
                    out.append(Outgoing(topic, encode_log(record), key=key))
                if reads or deliveries:
                    record = UserLog((), tuple(reads), tuple(deliveries), ts)
                    out.append(Outgoing(topic, encode_log(record), key=key))
        return out


def _append_bytes(append: InboxAppend) -> int:
    """Estimated bytes of an inbox append in a log record."""
    return message_bytes(append.message) + 16 * len(append.users)
