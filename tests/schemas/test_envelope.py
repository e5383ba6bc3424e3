"""The bus envelope and gate records: round trips, compactness, evolution, bad bytes."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.envelope import (
    Deliver,
    Envelope,
    GateRecord,
    Kick,
    Origin,
    Reply,
    Target,
    decode_envelope,
    decode_gate_record,
    encode_envelope,
    encode_gate_record,
    make_envelope,
    now_ms,
)
from schemas.errors import EnvelopeError, ProtocolError, SchemaError
from schemas.ids import ConnId, GateId, TraceId, UserId, new_trace_id

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 2**64 - 1)
trace_ids = st.builds(new_trace_id)
ts = st.integers(0, 2**63 - 1)
targets = st.builds(Target, conn_id=u64.map(ConnId), user_id=u64.map(UserId))
origins = st.builds(
    Origin,
    gate_id=st.text(max_size=20).map(GateId),
    conn_id=u64.map(ConnId),
    user_id=u64.map(UserId),
    client_type=u32,
    frame_seq=u16,
)
envelopes = st.builds(
    Envelope,
    cmd=u16,
    body=st.binary(max_size=200),
    origin=st.none() | origins,
    trace_id=trace_ids,
    ts_ms=ts,
)
gate_records: st.SearchStrategy[GateRecord] = st.one_of(
    st.builds(
        Deliver,
        cmd=u16,
        body=st.binary(max_size=200),
        targets=st.lists(targets, max_size=5).map(tuple),
        trace_id=trace_ids,
        ts_ms=ts,
    ),
    st.builds(
        Reply,
        target=targets,
        cmd=u16,
        seq=u16,
        body=st.binary(max_size=200),
        trace_id=trace_ids,
        ts_ms=ts,
    ),
    st.builds(
        Kick,
        target=targets,
        reason=u32,
        new_client_type=u32,
        text=st.text(max_size=40),
        trace_id=trace_ids,
        ts_ms=ts,
    ),
)

ORIGIN = Origin(GateId("gate-1"), ConnId(1 << 40), UserId(1008), 1, 7)


@given(envelope=envelopes)
def test_envelope_round_trip(envelope: Envelope) -> None:
    assert decode_envelope(encode_envelope(envelope)) == envelope


@given(record=gate_records)
def test_gate_record_round_trip(record: GateRecord) -> None:
    decoded = decode_gate_record(encode_gate_record(record))
    assert decoded == record
    assert type(decoded) is type(record)


def test_envelope_is_compact() -> None:
    body = b"\x00" * 60
    envelope = make_envelope(0x0301, body, origin=ORIGIN)
    data = encode_envelope(envelope)
    # A positional array: no field names, just the tag and the values.
    assert data[:2] == b"\x96\x01"
    assert b"trace_id" not in data
    # tag, cmd, body header, origin (gate id, ids, type, seq), 32-char trace id, timestamp.
    assert len(data) - len(body) <= 80


def test_make_envelope_stamps_time_and_trace() -> None:
    before = now_ms()
    envelope = make_envelope(0x0303, b"")
    assert before <= envelope.ts_ms <= now_ms()
    assert len(envelope.trace_id) == 32
    assert envelope.origin is None
    fixed = make_envelope(0x0303, b"", trace_id=TraceId("t"), ts_ms=5, origin=ORIGIN)
    assert (fixed.trace_id, fixed.ts_ms, fixed.origin) == ("t", 5, ORIGIN)


def test_records_are_frozen() -> None:
    envelope = make_envelope(0x0301, b"")
    with pytest.raises(AttributeError):
        envelope.cmd = 1  # type: ignore[misc]


def test_an_older_decoder_reads_a_newer_envelope() -> None:
    # A future producer appends a field; today's decoder ignores it.
    class EnvelopeV1Plus(msgspec.Struct, array_like=True, tag=1):
        cmd: int
        body: bytes
        origin: Origin | None
        trace_id: str
        ts_ms: int
        tenant: str = ""

    data = msgspec.msgpack.encode(EnvelopeV1Plus(0x0301, b"b", ORIGIN, "t", 1, tenant="acme"))
    assert decode_envelope(data) == Envelope(0x0301, b"b", ORIGIN, TraceId("t"), 1)


def test_record_kinds_are_not_confused() -> None:
    reply = Reply(Target(ConnId(1), UserId(2)), 0x0302, 9, b"", TraceId("t"), 0)
    with pytest.raises(EnvelopeError, match="not an envelope"):
        decode_envelope(encode_gate_record(reply))
    with pytest.raises(EnvelopeError, match="not a gate record"):
        decode_gate_record(encode_envelope(make_envelope(1, b"")))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used MessagePack opcode
        b"\x96\x01",  # truncated
        msgspec.msgpack.encode([1, 0x10000, b"", None, "t", 0]),  # cmd above u16
        msgspec.msgpack.encode([1, 1, b"", None, "t", -1]),  # negative timestamp
        msgspec.msgpack.encode([1, 1, "not bytes", None, "t", 0]),
        msgspec.msgpack.encode([1, 1, b"", ["g", 1, 2, 3, 0x10000], "t", 0]),  # frame seq
        msgspec.msgpack.encode([2, 1, b"", None, "t", 0]),  # unknown tag
        msgspec.msgpack.encode({"cmd": 1}),
    ],
)
def test_bad_envelopes(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_envelope(data)


@given(data=st.binary(max_size=100))
def test_garbage_raises_only_envelope_error(data: bytes) -> None:
    for decode in (decode_envelope, decode_gate_record):
        with contextlib.suppress(EnvelopeError):
            decode(data)


def test_envelope_error_is_not_a_protocol_error() -> None:
    # A bad bus record is dead-lettered; it must not be handled as a client's fault.
    assert issubclass(EnvelopeError, SchemaError)
    assert not issubclass(EnvelopeError, ProtocolError)
