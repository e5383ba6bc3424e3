"""The trace id of any CoffeeBus record value, read without decoding the rest of it.

A batch record (`schemas.envelope.GateBatch`, `schemas.events.FanoutBatch`,
`schemas.events.TimerBatch`) answers with its first item's trace id.

Every record kind carries the trace id of the client frame (or API request) that caused it
(`schemas.envelope`, `schemas.events`, `schemas.bizevents`). The bus runner puts it in the
log lines of the consumer handling the record (`bus.runner`), whatever the topic, so it
needs one cheap way to find it: for the MessagePack records (a tagged array, fields only
ever appended) a view struct per tag whose fields before the trace id are `msgspec.Raw` —
skipped, not decoded; for the JSON business events, a struct with only ``trace_id``.
tests/schemas/test_trace.py checks each view against its real struct.
"""

from __future__ import annotations

from typing import Final

import msgspec

from schemas.envelope import DELIVER_TAG, ENVELOPE_TAG, GATE_BATCH_TAG, KICK_TAG, REPLY_TAG
from schemas.events import (
    DELIVERY_TIMER_TAG,
    FANOUT_BATCH_TAG,
    FANOUT_TAG,
    PUSH_REQUEST_TAG,
    TIMER_BATCH_TAG,
)

__all__ = ["trace_id_of"]

Raw = msgspec.Raw


class _Base(msgspec.Struct, frozen=True, array_like=True, gc=False):
    pass


class _Envelope(_Base, frozen=True, tag=ENVELOPE_TAG):
    cmd: Raw
    body: Raw
    origin: Raw
    trace_id: str


class _Deliver(_Base, frozen=True, tag=DELIVER_TAG):
    cmd: Raw
    body: Raw
    targets: Raw
    trace_id: str


class _Reply(_Base, frozen=True, tag=REPLY_TAG):
    target: Raw
    cmd: Raw
    seq: Raw
    body: Raw
    trace_id: str


class _Kick(_Base, frozen=True, tag=KICK_TAG):
    target: Raw
    reason: Raw
    new_client_type: Raw
    text: Raw
    trace_id: str


class _Fanout(_Base, frozen=True, tag=FANOUT_TAG):
    message: Raw
    recipients: Raw
    trace_id: str


class _DeliveryTimer(_Base, frozen=True, tag=DELIVERY_TIMER_TAG):
    user_id: Raw
    notice: Raw
    due_ms: Raw
    trace_id: str


class _PushRequest(_Base, frozen=True, tag=PUSH_REQUEST_TAG):
    user_id: Raw
    notice: Raw
    trace_id: str


class _GateBatch(_Base, frozen=True, tag=GATE_BATCH_TAG):
    items: tuple[_Deliver | _Reply | _Kick, ...]

    @property
    def trace_id(self) -> str:
        return self.items[0].trace_id if self.items else ""


class _FanoutBatch(_Base, frozen=True, tag=FANOUT_BATCH_TAG):
    fanouts: tuple[_Fanout, ...]

    @property
    def trace_id(self) -> str:
        return self.fanouts[0].trace_id if self.fanouts else ""


class _TimerBatch(_Base, frozen=True, tag=TIMER_BATCH_TAG):
    timers: tuple[_DeliveryTimer, ...]

    @property
    def trace_id(self) -> str:
        return self.timers[0].trace_id if self.timers else ""


class _JsonEvent(msgspec.Struct, frozen=True, gc=False):
    trace_id: str = ""


_msgpack: Final = msgspec.msgpack.Decoder(
    _Envelope
    | _Deliver
    | _Reply
    | _Kick
    | _Fanout
    | _DeliveryTimer
    | _PushRequest
    | _GateBatch
    | _FanoutBatch
    | _TimerBatch
)
_json: Final = msgspec.json.Decoder(_JsonEvent)


def trace_id_of(value: bytes) -> str | None:
    """The trace id in a record value, or None (unknown kind, garbage, or none set)."""
    try:
        if value[:1] == b"{":
            return _json.decode(value).trace_id or None
        return _msgpack.decode(value).trace_id or None
    except msgspec.DecodeError:
        return None
