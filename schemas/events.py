"""Internal records between consumer groups (not client frames, not gate records).

``Fanout`` (tag 20) — topic ``im.fanout``, key: a recipient's user id (decimal ASCII)
    One stored message for one or more recipients whose inbox timelines live in the same
    ``im.fanout`` partition. The msg group publishes it once the message is durable; the
    fanout group, the single writer of those inboxes, appends the message to each
    recipient's inbox, moves their sessions and pushes it to their online devices. For a
    group the msg group groups the members by partition, so one record carries many
    recipients and lands where all of them are owned.

``DeliveryTimer`` (tag 21) — topic ``im.timer``, key: the recipient's user id (decimal ASCII)
    "Check at `due_ms` whether a device of `user_id` acked this message." The fanout group
    publishes one per (recipient other than the sender, message) with ``due_ms = now +
    [push] timer_delay_s``; the timer group waits until it is due, then drops it if the
    user's delivery mark reached its seq, or turns it into a `PushRequest`.

``PushRequest`` (tag 22) — topic ``im.push``, key: the recipient's user id (decimal ASCII)
    "Send an offline push about this message to every registered device of `user_id`."
    The timer group publishes it; the push group sends it through the devices' providers,
    at most once per (user, conversation, seq) (`store.push_log`).

``FanoutBatch`` (tag 23) and ``TimerBatch`` (tag 24) carry several `Fanout` or
`DeliveryTimer` records of one partition, in order: the msg group publishes one fan-out
record per ``im.fanout`` partition and batch, the fanout group one timer record per
``im.timer`` partition and batch. Consumers read a single record and a batch alike
(`decode_fanouts`, `decode_delivery_timers`).

Both carry a `PushNotice`: what a notification says about the message, taken from the
fan-out record, so neither group reads the timeline back.

The message travels whole (`FanoutMessage`, the fields of a stored message): the fanout group
never reads the conversation timeline back, and a replayed record carries exactly what was
first stored (the msg group republishes the *original* message for a resent client_msg_id).

Encoding and evolution follow `schemas.envelope`: compact MessagePack arrays with a leading
tag, fields only ever appended with defaults.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from schemas.errors import EnvelopeError
from schemas.ids import ConnId, ConversationId, GateId, TraceId, UserId

__all__ = [
    "DELIVERY_TIMER_TAG",
    "FANOUT_TAG",
    "PUSH_REQUEST_TAG",
    "DeliveryTimer",
    "Fanout",
    "FanoutBatch",
    "FanoutMessage",
    "PushNotice",
    "PushRequest",
    "TimerBatch",
    "decode_delivery_timer",
    "decode_delivery_timers",
    "decode_fanout",
    "decode_fanouts",
    "decode_push_request",
    "encode_fanout",
    "encode_record",
    "recipient_key",
]

FANOUT_TAG: Final = 20
DELIVERY_TIMER_TAG: Final = 21
PUSH_REQUEST_TAG: Final = 22
FANOUT_BATCH_TAG: Final = 23
TIMER_BATCH_TAG: Final = 24

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(gt=0)]


class FanoutMessage(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A stored message as the fanout group needs it (mirrors `store.messages.StoredMessage`,
    which the schemas package cannot import)."""

    conversation: ConversationId
    seq: Positive
    client_msg_id: str
    from_user_id: UserId
    to_session_id: NonNegative
    session_type: NonNegative
    msg_type: NonNegative
    msg_data: bytes
    created_ms: NonNegative
    attach: str = ""
    sender_client_type: NonNegative = 0
    #: the sender's nick name from the user store (pushed as MsgData.from_nick_name)
    from_nick_name: str = ""


class Fanout(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=FANOUT_TAG):
    """Append `message` to the inboxes of `recipients` and deliver it to their devices."""

    message: FanoutMessage
    recipients: tuple[UserId, ...]
    trace_id: TraceId
    ts_ms: NonNegative
    #: The connection the message came from (the sender's device): it already has the
    #: message (its MsgDataAck), so it gets no push. Empty for system messages.
    skip_gate: GateId | None = None
    skip_conn: ConnId | None = None


class PushNotice(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What an offline push says about one message (from its fan-out record)."""

    conversation: ConversationId
    seq: Positive
    from_user_id: UserId
    #: the sender's nick name ("" if unknown)
    from_nick_name: str
    #: SINGLE (1) or GROUP (2); `group_id` is set for a group
    session_type: NonNegative
    msg_type: NonNegative
    created_ms: NonNegative
    group_id: NonNegative = 0
    #: the start of a text message, up to ``[push] preview_chars`` ("" = say nothing of it)
    preview: str = ""


class DeliveryTimer(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=DELIVERY_TIMER_TAG):
    """At `due_ms`, check whether a device of `user_id` acked `notice`'s message."""

    user_id: UserId
    notice: PushNotice
    due_ms: NonNegative
    trace_id: TraceId


class PushRequest(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=PUSH_REQUEST_TAG):
    """Push `notice` to the registered devices of `user_id` (no device acked it in time)."""

    user_id: UserId
    notice: PushNotice
    trace_id: TraceId
    ts_ms: NonNegative

    @property
    def dedupe_key(self) -> str:
        """One push per (user, conversation, seq), however often the request is replayed."""
        return f"{self.user_id}|{self.notice.conversation}|{self.notice.seq}"


class FanoutBatch(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=FANOUT_BATCH_TAG):
    """Several `Fanout` records whose recipients all live in one ``im.fanout`` partition."""

    fanouts: tuple[Fanout, ...]


class TimerBatch(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=TIMER_BATCH_TAG):
    """Several `DeliveryTimer` records of one ``im.timer`` partition, in due order."""

    timers: tuple[DeliveryTimer, ...]


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Fanout)
_fanouts_decoder: Final = msgspec.msgpack.Decoder(Fanout | FanoutBatch)
_timer_decoder: Final = msgspec.msgpack.Decoder(DeliveryTimer)
_timers_decoder: Final = msgspec.msgpack.Decoder(DeliveryTimer | TimerBatch)
_push_decoder: Final = msgspec.msgpack.Decoder(PushRequest)


def recipient_key(user_id: int) -> bytes:
    """The ``im.fanout`` record key of a recipient (as gates key users: decimal ASCII)."""
    return b"%d" % user_id


def encode_fanout(record: Fanout) -> bytes:
    """The record value of a `Fanout`."""
    return _encoder.encode(record)


def decode_fanout(data: bytes | bytearray | memoryview) -> Fanout:
    """Decode an ``im.fanout`` record value; `EnvelopeError` if it is not a `Fanout`."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a fanout record ({len(data)} bytes): {exc}") from exc


def decode_fanouts(data: bytes | bytearray | memoryview) -> tuple[Fanout, ...]:
    """The `Fanout` records of an ``im.fanout`` record value (one, or a `FanoutBatch`);
    `EnvelopeError` if it is neither."""
    try:
        record = _fanouts_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a fanout record ({len(data)} bytes): {exc}") from exc
    return record.fanouts if isinstance(record, FanoutBatch) else (record,)


def encode_record(
    record: DeliveryTimer | PushRequest | FanoutBatch | TimerBatch,
) -> bytes:
    """The record value of a `DeliveryTimer`, a `PushRequest` or a batch."""
    return _encoder.encode(record)


def decode_delivery_timer(data: bytes | bytearray | memoryview) -> DeliveryTimer:
    """Decode an ``im.timer`` record value; `EnvelopeError` if it is not a `DeliveryTimer`."""
    try:
        return _timer_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a delivery timer record ({len(data)} bytes): {exc}") from exc


def decode_delivery_timers(data: bytes | bytearray | memoryview) -> tuple[DeliveryTimer, ...]:
    """The `DeliveryTimer` records of an ``im.timer`` record value (one, or a `TimerBatch`);
    `EnvelopeError` if it is neither."""
    try:
        record = _timers_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a delivery timer record ({len(data)} bytes): {exc}") from exc
    return record.timers if isinstance(record, TimerBatch) else (record,)


def decode_push_request(data: bytes | bytearray | memoryview) -> PushRequest:
    """Decode an ``im.push`` record value; `EnvelopeError` if it is not a `PushRequest`."""
    try:
        return _push_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a push request record ({len(data)} bytes): {exc}") from exc
