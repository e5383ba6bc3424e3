"""What a consumer handler produces besides its store writes: records to publish.

Handlers never publish as they go. They collect `Effects` — responses to a request's
connection, pushes to users' connections grouped per gate, records for other topics — and the
group runner publishes them all in one `Bus.publish_batch` *after* the handler's store writes
have succeeded and *before* the batch is committed. That order is what DESIGN.md's
invariants need: an ack leaves only after the store is durable (4), and nothing is committed
that was not handed on (3, 5). A replayed batch produces its effects again; every receiver of
them is idempotent or harmless to repeat (an ack, a response, a push the client dedupes by
``server_msg_id``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from google.protobuf.message import Message

from bus.base import Bus, Outgoing, UnknownTopicError
from bus.partitioner import partition_for_key
from bus.topology import Topology
from schemas.codes import ExtResultCode
from schemas.commands import Cmd, spec
from schemas.envelope import (
    Deliver,
    Origin,
    Reply,
    Target,
    encode_gate_record,
    now_ms,
)
from schemas.ids import ConnId, GateId, TraceId, UserId
from schemas.pb.coffeebus import ext_pb2
from store.routes import Route

__all__ = ["Effects"]

log = logging.getLogger(__name__)


class Effects:
    """Records one handler call wants published, in order."""

    __slots__ = ("_pushes", "_topology", "outgoing")

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self.outgoing: list[Outgoing] = []
        # (gate, cmd, body, trace) -> targets: one Deliver per gate and distinct push.
        self._pushes: dict[tuple[str, int, bytes, str], list[Target]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self.outgoing) + len(self._pushes)

    def publish(self, topic: str, value: bytes, *, key: bytes | None = None) -> None:
        """A record for a declared topic (raises for an undeclared name)."""
        self._topology.topic(topic)
        self.outgoing.append(Outgoing(topic=topic, value=value, key=key))

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
        self._to_gate(origin.gate_id, record.target.conn_id, encode_gate_record(record))

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
        """Publish `records()` in one batch; records for a gate whose topic is gone are dropped.

        A gate topic disappears when its gate is retired (or a test tears it down). The
        connections it served are gone with it: their clients reconnect elsewhere and catch
        up by sync, so a reply or push addressed there has no reader. Failing the batch
        instead would dead-letter the record and lose everything else it produced — the
        fan-out of a stored message among it. Any other unknown topic is a deployment error
        and raises.
        """
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
        """Everything to publish: the direct records, then the Delivers of the pushes.

        A push becomes one Deliver per gate *partition* and body, keyed by a connection of
        that partition: every record for one connection (Replies are keyed by it too) then
        travels in one partition of the gate topic, so the connection gets them in the order
        they were published — a keyless Deliver could overtake an earlier one on another
        partition, and a conversation's messages would arrive out of order.
        """
        out = list(self.outgoing)
        ts = now_ms()
        for (gate_id, cmd, body, trace_id), targets in self._pushes.items():
            gate = GateId(gate_id)
            partitions = self._topology.gate_topic(gate).partitions
            by_partition: dict[int, list[Target]] = defaultdict(list)
            for target in targets:
                by_partition[partition_for_key(_conn_key(target.conn_id), partitions)].append(
                    target
                )
            for group in by_partition.values():
                record = Deliver(
                    cmd=cmd, body=body, targets=tuple(group), trace_id=TraceId(trace_id), ts_ms=ts
                )
                out.append(self._gate_record(gate, group[0].conn_id, encode_gate_record(record)))
        return out

    def _to_gate(self, gate_id: GateId, conn_id: ConnId | None, value: bytes) -> None:
        self.outgoing.append(self._gate_record(gate_id, conn_id, value))

    def _gate_record(self, gate_id: GateId, conn_id: ConnId | None, value: bytes) -> Outgoing:
        # Gate topics are instances of the declared template; the key keeps one connection's
        # records in one partition, in order.
        topic = self._topology.gate_topic(gate_id).name
        key = None if conn_id is None else _conn_key(conn_id)
        return Outgoing(topic=topic, value=value, key=key)


def _conn_key(conn_id: int) -> bytes:
    """The gate-topic key of a connection (as the gate keys its own records)."""
    return b"%d" % conn_id
