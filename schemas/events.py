"""Internal records between consumer groups (not client frames, not gate records).

``Fanout`` (tag 20) — topic ``im.fanout``, key: a recipient's user id (decimal ASCII)
    One stored message for one or more recipients whose inbox timelines live in the same
    ``im.fanout`` partition. The msg group publishes it once the message is durable; the
    fanout group, the single writer of those inboxes, appends the message to each
    recipient's inbox, moves their sessions and pushes it to their online devices. For a
    group the msg group groups the members by partition, so one record carries many
    recipients and lands where all of them are owned.

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
    "FANOUT_TAG",
    "Fanout",
    "FanoutMessage",
    "decode_fanout",
    "encode_fanout",
    "recipient_key",
]

FANOUT_TAG: Final = 20

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


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Fanout)


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
