"""The bus envelope: what every record on the CoffeeBus topics carries (DESIGN.md).

Two families of records, each a frozen `msgspec.Struct` encoded as a compact MessagePack
array (``array_like=True``: no field names on the wire) whose first element is a small
integer tag naming the record kind *and its version*:

``Envelope`` (tag 1) — uplink topics ``im.up.*``
    One client command as a gate received it: the command id, the protobuf body untouched,
    where it came from (`Origin`: gate, connection, user, client type, frame seq — enough to
    route the response back), a trace id and a timestamp. Commands the server API
    publishes (system messages, group notifications) have ``origin=None``.

``GateRecord`` — a gate's own topic ``im.gate.<gate_id>``, a tagged union of
    `Deliver` (tag 10)  one body to many connections of that gate, as server pushes: the
                        gate stamps each connection's own push seq, so the body is shared
                        and the header is written per connection;
    `Reply` (tag 11)    a response to one request: echoes the request's frame seq;
    `Kick` (tag 12)     close a connection after sending it a KickNotify;
    `GateBatch` (tag 13) several of the above for connections of one gate-topic
                        partition, in order: what one consumer batch produced for it;
    `KickUser` (tag 14) close *every* connection of a user on that gate (of some client
                        types, or only those logged in with another token than the current
                        one) after a KickNotify: the server API's session administration,
                        sent to every live gate (a gate older than this record logs and
                        drops it).
    `RoomDeliver` (tag 15) room messages for every connection of that gate in one chat
                        room: read diffusion, the gate fans out to its own members from
                        memory (one record per gate that has members, never per member);
    `RoomClose` (tag 16) the business closed a room: every connection of the gate in it gets
                        a RoomExitNotify (CLOSED) and leaves it.

Every connection is addressed as a `Target` (connection id *and* user id): a gate delivers
only if the connection is still logged in as that user, so a record that outlived its
connection can never reach someone else.

Evolution: fields are only ever appended, with defaults; decoders ignore trailing elements
they do not know, so an old consumer reads a newer producer's records. An incompatible
change is a new struct with a new tag, decoded side by side with the old one.

Command ids, client types and reasons are plain ints here rather than IntEnums: a record
written by a newer gate that knows one more command must still decode (and be rejected by
the command table with a clear error) instead of being dead-lettered as undecodable.

``gc=False`` is set on every struct: they hold only scalars, bytes, and tuples of other such
structs, so they can never be part of a reference cycle.
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Final, TypeAlias

import msgspec

from schemas.errors import EnvelopeError
from schemas.ids import ConnId, GateId, TraceId, UserId, new_trace_id

__all__ = [
    "Deliver",
    "Envelope",
    "EnvelopeError",
    "GateBatch",
    "GateRecord",
    "Kick",
    "KickUser",
    "Origin",
    "Reply",
    "RoomClose",
    "RoomDeliver",
    "RoomItem",
    "Target",
    "decode_envelope",
    "decode_gate_record",
    "encode_envelope",
    "encode_gate_record",
    "make_envelope",
    "now_ms",
    "token_digest",
]

U16 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
U32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF_FFFF)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
# u64 at most: MessagePack has no larger integers (msgspec cannot check a bound above int64).
UserIdField = Annotated[UserId, msgspec.Meta(ge=0)]
ConnIdField = Annotated[ConnId, msgspec.Meta(ge=0)]

ENVELOPE_TAG: Final = 1
DELIVER_TAG: Final = 10
REPLY_TAG: Final = 11
KICK_TAG: Final = 12
GATE_BATCH_TAG: Final = 13
KICK_USER_TAG: Final = 14
ROOM_DELIVER_TAG: Final = 15
ROOM_CLOSE_TAG: Final = 16


class Origin(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Where an uplink command came from."""

    gate_id: GateId
    conn_id: ConnIdField
    user_id: UserIdField
    #: a `schemas.codes.ClientType` value
    client_type: U32
    #: the request frame's seq, echoed by the response
    frame_seq: U16


class Envelope(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=ENVELOPE_TAG):
    """One command on an uplink topic (``im.up.*``)."""

    #: a `schemas.commands.Cmd` value
    cmd: U16
    #: the protobuf body exactly as received (or as the API built it)
    body: bytes
    origin: Origin | None
    trace_id: TraceId
    #: when the gate received the frame (or the API the request), unix milliseconds
    ts_ms: NonNegative


class Target(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One connection of a gate, and the user it must still belong to."""

    conn_id: ConnIdField
    user_id: UserIdField


class Deliver(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=DELIVER_TAG):
    """Push one command to several connections of a gate, each with its own push seq."""

    cmd: U16
    body: bytes
    targets: tuple[Target, ...]
    trace_id: TraceId
    ts_ms: NonNegative


class Reply(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=REPLY_TAG):
    """Answer one request: the frame carries `seq`, the request's seq."""

    target: Target
    cmd: U16
    seq: U16
    body: bytes
    trace_id: TraceId
    ts_ms: NonNegative


class Kick(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=KICK_TAG):
    """Send a KickNotify to a connection, then close it (e.g. a newer login elsewhere)."""

    target: Target
    #: a `schemas.codes.KickReason` value
    reason: U32
    #: the client type of the login that caused the kick (`schemas.codes.ClientType`)
    new_client_type: U32
    text: str
    trace_id: TraceId
    ts_ms: NonNegative


class GateBatch(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=GATE_BATCH_TAG):
    """Records for connections of one gate-topic partition, to be applied in order."""

    items: tuple[Deliver | Reply | Kick, ...]


class KickUser(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=KICK_USER_TAG):
    """Close every connection of `user_id` on the gate that `client_types` (empty: all)
    and `keep_token` select, each after a KickNotify with `reason` and `text`.

    `keep_token` (a `token_digest`; empty: not used) spares what the current token opened:
    only connections logged in with *another* token are closed (a rotation), never those
    logged in by password.
    """

    user_id: UserIdField
    client_types: tuple[U32, ...]
    keep_token: bytes
    #: a `schemas.codes.KickReason` value
    reason: U32
    text: str
    trace_id: TraceId
    ts_ms: NonNegative


class RoomItem(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One room message as every member gets it."""

    #: the room's sequence number of the message (RoomMsg.msg_id): a connection that joined
    #: with the message already in its history skips it
    msg_id: NonNegative
    #: the encoded RoomMsg (0x0818), the same bytes for every member
    body: bytes
    #: the connection that sent it (it got a RoomSendRsp instead); 0 for none
    skip_conn: ConnIdField
    #: when the gate received the send (unix milliseconds): send-to-deliver latency
    sent_ms: NonNegative


class RoomDeliver(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=ROOM_DELIVER_TAG):
    """Room messages for every connection of this gate in `room_id`, in the room's order.

    Keyed by the room id on the gate topic, so one room's records (and its `RoomClose`) stay
    in one partition, in order.
    """

    room_id: NonNegative
    items: tuple[RoomItem, ...]
    trace_id: TraceId
    ts_ms: NonNegative


class RoomClose(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=ROOM_CLOSE_TAG):
    """The room is closed: its members on this gate get a RoomExitNotify (CLOSED) and leave."""

    room_id: NonNegative
    text: str
    trace_id: TraceId
    ts_ms: NonNegative


GateRecord: TypeAlias = Deliver | Reply | Kick | GateBatch | KickUser | RoomDeliver | RoomClose


def token_digest(token: str) -> bytes:
    """What a gate keeps of the token a connection logged in with, and what `KickUser`
    names: the first 16 bytes of its SHA-256 (no token on the bus or in a gate's memory)."""
    return hashlib.sha256(token.encode("utf-8")).digest()[:16]


_encoder: Final = msgspec.msgpack.Encoder()
_envelope_decoder: Final = msgspec.msgpack.Decoder(Envelope)
_gate_decoder: Final[msgspec.msgpack.Decoder[GateRecord]] = msgspec.msgpack.Decoder(GateRecord)


def now_ms() -> int:
    """The current time in unix milliseconds, as records carry it."""
    return time.time_ns() // 1_000_000


def make_envelope(
    cmd: int,
    body: bytes,
    *,
    origin: Origin | None = None,
    trace_id: TraceId | None = None,
    ts_ms: int | None = None,
) -> Envelope:
    """An `Envelope` stamped now with a fresh trace id unless given."""
    return Envelope(
        cmd=cmd,
        body=body,
        origin=origin,
        trace_id=new_trace_id() if trace_id is None else trace_id,
        ts_ms=now_ms() if ts_ms is None else ts_ms,
    )


def encode_envelope(envelope: Envelope) -> bytes:
    """The record value for an `Envelope`."""
    return _encoder.encode(envelope)


def decode_envelope(data: bytes | bytearray | memoryview) -> Envelope:
    """Decode an uplink record value; `EnvelopeError` if it is not a valid `Envelope`."""
    try:
        return _envelope_decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise EnvelopeError(f"not an envelope ({len(data)} bytes): {exc}") from exc


def encode_gate_record(record: GateRecord) -> bytes:
    """The record value for a gate topic record."""
    return _encoder.encode(record)


def decode_gate_record(data: bytes | bytearray | memoryview) -> GateRecord:
    """Decode a gate topic record value; `EnvelopeError` if it is none of `GateRecord`."""
    try:
        return _gate_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a gate record ({len(data)} bytes): {exc}") from exc
