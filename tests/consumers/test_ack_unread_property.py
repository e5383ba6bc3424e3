"""Exact unread counts under any interleaving of appends, seq gaps and read acks.

Hypothesis drives the memory twins the way the groups do: the msg group stores a message at
a conversation seq (with gaps, as after a change of owner), the fanout group appends it to the
receiver's inbox and touches the session, and read acks — some stale, some beyond the latest
message, from several devices, in batches, two batches at once — go through the real
`AckHandler`. After every step the session's unread count must equal a model's: the peer's
messages above the highest read ack (clamped to the latest message at the time of the ack),
and the read seq must never have moved back.
"""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.base import Record
from bus.topology import load_topology
from coffeebus.wiring import memory_bus_for
from consumers.ack import AckHandler
from schemas.codes import MsgType, SessionType
from schemas.commands import Cmd
from schemas.envelope import Origin, encode_envelope, make_envelope
from schemas.ids import ConnId, GateId, UserId, c2c_conversation_id
from schemas.pb.coffeechat import base_pb2, message_pb2
from store.inbox import InboxEntry
from store.memory.deliveries import MemoryDeliveryStore
from store.memory.groups import MemoryGroupStore
from store.memory.inbox import MemoryInboxStore
from store.memory.messages import MemoryMessageStore
from store.memory.routes import MemoryRouteStore
from store.memory.sessions import MemorySessionStore
from store.messages import StoredMessage
from store.sessions import SessionTouch

READER, PEER = UserId(11), UserId(12)
CONV = c2c_conversation_id(READER, PEER)
TOPOLOGY = load_topology()

# A step: ("peer", gap) the peer sends after skipping `gap` seqs; ("own", gap) the reader
# sends; ("read", [offsets...], [offsets...]) two batches of read acks handled at once, each
# offset relative to the latest seq (negative: stale, positive: beyond the latest).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("peer"), st.integers(0, 3)),
        st.tuples(st.just("own"), st.integers(0, 3)),
        st.tuples(
            st.just("read"),
            st.lists(st.integers(-6, 3), min_size=1, max_size=3),
            st.lists(st.integers(-6, 3), max_size=3),
        ),
    ),
    min_size=1,
    max_size=30,
)


def _record(offset: int, envelope_bytes: bytes) -> Record:
    return Record(
        topic="im.up.ack",
        partition=0,
        offset=offset,
        key=str(READER).encode(),
        value=envelope_bytes,
        headers=(),
        timestamp_ms=0,
    )


def _read_ack(msg_id: int, device: int) -> bytes:
    body = message_pb2.MsgDataReadAck(
        user_id=READER, session_id=PEER, msg_id=msg_id, session_type=base_pb2.SESSION_TYPE_SINGLE
    )
    origin = Origin(
        gate_id=GateId("g1"), conn_id=ConnId(device), user_id=READER, client_type=1, frame_seq=1
    )
    return encode_envelope(make_envelope(Cmd.MSG_READ_ACK, body.SerializeToString(), origin=origin))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps)
async def test_unread_stays_exact_under_any_interleaving(
    script: list[tuple[object, ...]],
) -> None:
    messages = MemoryMessageStore()
    inbox = MemoryInboxStore()
    sessions = MemorySessionStore(inbox)
    bus = memory_bus_for(TOPOLOGY)
    handler = AckHandler(
        bus=bus,
        topology=TOPOLOGY,
        routes=MemoryRouteStore(),
        messages=messages,
        sessions=sessions,
        groups=MemoryGroupStore(),
        deliveries=MemoryDeliveryStore(),
    )
    seq = inbox_seq = 0
    peer_seqs: list[int] = []
    model_read = 0
    offsets = itertools.count()
    for step in script:
        if step[0] in ("peer", "own"):
            gap = step[1]
            assert isinstance(gap, int)
            seq += 1 + gap
            inbox_seq += 1 + gap
            sender = PEER if step[0] == "peer" else READER
            msg = StoredMessage(
                conversation=CONV,
                seq=seq,
                client_msg_id=f"m{seq}",
                from_user_id=sender,
                to_session_id=READER if sender == PEER else PEER,
                session_type=SessionType.SINGLE,
                msg_type=MsgType.TEXT,
                msg_data=b"x",
                created_ms=1_700_000_000_000 + seq,
            )
            await messages.insert(msg)
            await inbox.append_many([InboxEntry(user_id=READER, inbox_seq=inbox_seq, message=msg)])
            await sessions.touch_many([SessionTouch(READER, msg)])
            if sender == PEER:
                peer_seqs.append(seq)
        else:
            batches = [b for b in step[1:] if b]
            acks: list[list[Record]] = []
            for device, batch in enumerate(batches):
                assert isinstance(batch, list)
                ids = [max(0, seq + off) for off in batch]
                acks.append([_record(next(offsets), _read_ack(i, device + 1)) for i in ids])
                model_read = max([model_read, *(min(i, seq) for i in ids)])
            before = await sessions.read_seq(READER, CONV)
            await asyncio.gather(*(handler.handle(batch) for batch in acks))
            assert await sessions.read_seq(READER, CONV) >= before
        session = await sessions.get(READER, CONV)
        if session is None:
            assert not peer_seqs
            continue
        assert session.read_seq == model_read
        assert session.unread == sum(1 for s in peer_seqs if s > model_read)
