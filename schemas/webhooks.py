"""The webhook contract: how an event is POSTed to a business server, signed, and dead-lettered.

Each delivery is ``POST <url>`` with the event's JSON (`schemas.bizevents`) as the body,
byte for byte as it is on its topic, and these headers::

    Content-Type: application/json
    X-CoffeeBus-Event-Id: message.stored:s:3:7:12      (dedupe on it: at-least-once)
    X-CoffeeBus-Event-Type: message.stored
    X-CoffeeBus-Delivery-Attempt: 1
    X-CoffeeBus-Timestamp: 1718000000                  (unix seconds, of this attempt)
    X-CoffeeBus-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

The receiver recomputes the HMAC over the timestamp, a dot and the raw body with its shared
secret, compares in constant time, and rejects timestamps too far from its clock (replay
protection) — `verify` does exactly that, and docs/events.md shows the same in a dozen lines
of any language. The ``v1=`` prefix versions the scheme; during a secret rotation a
signature header may carry several comma-separated ``v1=`` values, any of which may match.

A 2xx answer is success. 5xx, 429, timeouts and connection errors are retried with
exponential backoff; any other answer (a 4xx: the receiver refuses the event) and the last
failed attempt dead-letter the delivery: a `WebhookDeadLetter` is published on
``biz.webhooks.dead-letter`` (key: the event's key) and the sender moves on.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, ClassVar, Final

import msgspec

from schemas.bizevents import BizTopic

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookDeadLetter",
    "decode_dead_letter",
    "encode_dead_letter",
    "sign",
    "signature_header",
    "verify",
]

TIMESTAMP_HEADER: Final = "X-CoffeeBus-Timestamp"
SIGNATURE_HEADER: Final = "X-CoffeeBus-Signature"
EVENT_ID_HEADER: Final = "X-CoffeeBus-Event-Id"
EVENT_TYPE_HEADER: Final = "X-CoffeeBus-Event-Type"
ATTEMPT_HEADER: Final = "X-CoffeeBus-Delivery-Attempt"
SCHEME: Final = "v1"
#: how far a timestamp may be from the receiver's clock by default (seconds)
DEFAULT_TOLERANCE_S: Final = 300


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under `secret`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def signature_header(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The value of ``X-CoffeeBus-Signature`` for one attempt."""
    return f"{SCHEME}={sign(secret, timestamp, body)}"


def verify(
    secret: str | bytes,
    timestamp_header: str | None,
    signature: str | None,
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether a received webhook is authentic: a ``v1=`` signature of `body` under `secret`
    matches, and the timestamp is within `tolerance_s` of `now` (default: the clock)."""
    if not timestamp_header or not signature:
        return False
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    for part in signature.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme == SCHEME and hmac.compare_digest(value, expected):
            return True
    return False


class WebhookDeadLetter(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A webhook delivery that failed for good: the receiver refused it (4xx other than 429),
    every attempt failed, or earlier events of its key already failed in the same batch
    (``attempts`` 0: not tried, so that the receiver never sees them out of order).

    Replay it by POSTing ``body`` again (with fresh signature headers) once the receiver is
    fixed. Key: the event's key.
    """

    topic: ClassVar[BizTopic] = BizTopic.WEBHOOK_DEAD_LETTER

    subscriber: Annotated[str, msgspec.Meta(description="the subscriber's configured name")]
    url: str
    event_id: str
    event_type: str
    source_topic: str
    source_partition: Annotated[int, msgspec.Meta(ge=0)]
    source_offset: Annotated[int, msgspec.Meta(ge=0)]
    attempts: Annotated[int, msgspec.Meta(ge=0, description="POSTs made")]
    status: Annotated[int | None, msgspec.Meta(description="last HTTP status; null: none")]
    error: Annotated[str, msgspec.Meta(description="why the last attempt failed")]
    ts: Annotated[int, msgspec.Meta(ge=0, description="when it was given up, unix ms")]
    body: Annotated[str, msgspec.Meta(description="the event JSON exactly as it was POSTed")]


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(WebhookDeadLetter)


def encode_dead_letter(record: WebhookDeadLetter) -> bytes:
    """The record value (UTF-8 JSON) of a `WebhookDeadLetter`."""
    return _encoder.encode(record)


def decode_dead_letter(data: bytes | bytearray | memoryview) -> WebhookDeadLetter:
    """Decode a ``biz.webhooks.dead-letter`` record value (`msgspec.DecodeError` if not one)."""
    return _decoder.decode(data)
