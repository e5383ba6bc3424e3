"""schemas.trace: the trace id of every record kind, read without decoding the record."""

from __future__ import annotations

import msgspec
import pytest

from schemas.bizevents import UserOnline, encode_event
from schemas.envelope import (
    Deliver,
    GateBatch,
    Kick,
    Origin,
    Reply,
    Target,
    decode_gate_record,
    encode_envelope,
    encode_gate_record,
    make_envelope,
)
from schemas.events import (
    DeliveryTimer,
    Fanout,
    FanoutBatch,
    FanoutMessage,
    PushNotice,
    PushRequest,
    TimerBatch,
    decode_delivery_timers,
    decode_fanouts,
    encode_fanout,
    encode_record,
)
from schemas.ids import ConnId, ConversationId, GateId, TraceId, UserId, new_trace_id
from schemas.trace import trace_id_of

TRACE = new_trace_id()
TARGET = Target(conn_id=ConnId(7), user_id=UserId(42))
NOTICE = PushNotice(
    conversation=ConversationId("s:1:2"),
    seq=3,
    from_user_id=UserId(1),
    from_nick_name="a",
    session_type=1,
    msg_type=1,
    created_ms=1,
)
MESSAGE = FanoutMessage(
    conversation=ConversationId("s:1:2"),
    seq=3,
    client_msg_id="c",
    from_user_id=UserId(1),
    to_session_id=2,
    session_type=1,
    msg_type=1,
    msg_data=b"hello",
    created_ms=1,
)

VALUES = {
    "envelope": encode_envelope(
        make_envelope(
            0x0301,
            b"body",
            origin=Origin(GateId("g"), ConnId(1), UserId(2), 0, 3),
            trace_id=TRACE,
        )
    ),
    "system envelope": encode_envelope(make_envelope(0x0301, b"", trace_id=TRACE)),
    "deliver": encode_gate_record(
        Deliver(cmd=1, body=b"x", targets=(TARGET, TARGET), trace_id=TRACE, ts_ms=1)
    ),
    "reply": encode_gate_record(
        Reply(target=TARGET, cmd=1, seq=2, body=b"x", trace_id=TRACE, ts_ms=1)
    ),
    "kick": encode_gate_record(
        Kick(target=TARGET, reason=1, new_client_type=2, text="t", trace_id=TRACE, ts_ms=1)
    ),
    "fanout": encode_fanout(
        Fanout(message=MESSAGE, recipients=(UserId(1), UserId(2)), trace_id=TRACE, ts_ms=1)
    ),
    "delivery timer": encode_record(
        DeliveryTimer(user_id=UserId(2), notice=NOTICE, due_ms=5, trace_id=TRACE)
    ),
    "push request": encode_record(
        PushRequest(user_id=UserId(2), notice=NOTICE, trace_id=TRACE, ts_ms=1)
    ),
    "gate batch": encode_gate_record(
        GateBatch(
            (
                Reply(target=TARGET, cmd=1, seq=2, body=b"x", trace_id=TRACE, ts_ms=1),
                Deliver(cmd=1, body=b"x", targets=(TARGET,), trace_id=new_trace_id(), ts_ms=1),
            )
        )
    ),
    "fanout batch": encode_record(
        FanoutBatch(
            (
                Fanout(message=MESSAGE, recipients=(UserId(1),), trace_id=TRACE, ts_ms=1),
                Fanout(
                    message=MESSAGE, recipients=(UserId(2),), trace_id=TraceId("other"), ts_ms=1
                ),
            )
        )
    ),
    "timer batch": encode_record(
        TimerBatch(
            (
                DeliveryTimer(user_id=UserId(2), notice=NOTICE, due_ms=5, trace_id=TRACE),
                DeliveryTimer(
                    user_id=UserId(3), notice=NOTICE, due_ms=6, trace_id=TraceId("other")
                ),
            )
        )
    ),
    "business event": encode_event(
        UserOnline(
            id="user.online:g:1",
            ts=1,
            trace_id=TRACE,
            user_id=2,
            gate_id="g",
            conn_id=1,
            client_type=0,
        )
    ),
}


@pytest.mark.parametrize("kind", VALUES)
def test_the_trace_id_of_every_record_kind(kind: str) -> None:
    assert trace_id_of(VALUES[kind]) == TRACE


def test_a_record_from_a_newer_producer_with_appended_fields() -> None:
    value = msgspec.msgpack.decode(VALUES["envelope"])
    assert trace_id_of(msgspec.msgpack.encode([*value, "a field of the future"])) == TRACE


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00garbage", b"{not json", msgspec.msgpack.encode([99, 1, 2]), b'{"type": "x"}'],
)
def test_no_trace_id_in_garbage_or_unknown_records(value: bytes) -> None:
    assert trace_id_of(value) is None


def test_batches_decode_to_their_items_in_order() -> None:
    assert [f.recipients for f in decode_fanouts(VALUES["fanout batch"])] == [
        (UserId(1),),
        (UserId(2),),
    ]
    assert [t.user_id for t in decode_delivery_timers(VALUES["timer batch"])] == [2, 3]
    assert len(decode_fanouts(VALUES["fanout"])) == 1
    assert len(decode_delivery_timers(VALUES["delivery timer"])) == 1
    batch = decode_gate_record(VALUES["gate batch"])
    assert isinstance(batch, GateBatch)
    assert [type(item).__name__ for item in batch.items] == ["Reply", "Deliver"]


def test_an_empty_trace_id_is_none() -> None:
    value = encode_envelope(make_envelope(1, b"", trace_id=TraceId("")))
    assert trace_id_of(value) is None
