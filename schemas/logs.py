"""The logs of record: what the msg, fanout and ack groups append before anyone sees an effect.

A message is durable once it is in the replicated log (docs/architecture.md, "The logs of
record"); MongoDB holds projections of these logs, written behind by the ``projection``
group. Each record carries the work of one handler batch for one partition, so a busy
partition costs one log record per batch rather than one per message.

``MessageLog`` (tag 30) — topic ``im.log.msg``, keyed by conversation
    Messages as their conversation's single writer (the msg group) sequenced them, and
    revocations, in that writer's order. Every conversation of one record maps to the
    record's partition: ``im.log.msg`` has the partitions of ``im.up.msg`` and the same key
    rule, so a record holds the conversations of one ``im.up.msg`` partition and is keyed by
    the first of them. A message logged again (a resent client_msg_id, a replayed record)
    carries its original seq and time: the log may hold a message twice, never two versions.

``UserLog`` (tag 31) — topic ``im.log.user``, keyed by user
    Per-user facts of one ``im.fanout`` / ``im.up.ack`` partition (both keyed by user, with
    the partitions of ``im.log.user``): inbox appends from the fanout group (a message once,
    with every (user, inbox seq) it was appended at), and read and delivery marks from the
    ack group. Marks only ever move forward (the projection applies them with ``$max``), so
    their order does not matter; inbox appends of one user come in inbox seq order.

Encoding and evolution follow `schemas.envelope`: MessagePack arrays with a leading tag,
fields only ever appended with defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Annotated, Final, TypeAlias, TypeVar

import msgspec

from schemas.errors import EnvelopeError
from schemas.events import FanoutMessage
from schemas.ids import ConversationId, UserId

__all__ = [
    "MESSAGE_LOG_TAG",
    "RECORD_BUDGET_BYTES",
    "USER_LOG_TAG",
    "InboxAppend",
    "LogMark",
    "LogRecord",
    "MessageLog",
    "Revocation",
    "UserLog",
    "chunks",
    "decode_log",
    "encode_log",
    "message_bytes",
]

MESSAGE_LOG_TAG: Final = 30
USER_LOG_TAG: Final = 31

#: What a writer puts in one log record at most (the sum of its messages' data and a few
#: hundred bytes of fields each): well under Kafka's default ``max.message.bytes`` (1 MiB),
#: which topology.yaml keeps for the log topics.
RECORD_BUDGET_BYTES: Final = 512 * 1024
#: Estimated bytes of a logged item besides its message data (ids, client msg id, times).
_ITEM_OVERHEAD: Final = 256

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(gt=0)]


class Revocation(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Message `seq` of `conversation` was revoked by `by` (0: an administrator) at `at_ms`;
    the first revocation of a message is the one that counts."""

    conversation: ConversationId
    seq: Positive
    by: UserId
    at_ms: Positive


class MessageLog(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=MESSAGE_LOG_TAG):
    """Sequenced messages and revocations of one ``im.up.msg`` partition's conversations."""

    messages: tuple[FanoutMessage, ...]
    revocations: tuple[Revocation, ...] = ()
    ts_ms: NonNegative = 0


class InboxAppend(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """`message` appended to the inboxes of ``users[i]`` at inbox seq ``inbox_seqs[i]``."""

    message: FanoutMessage
    users: tuple[UserId, ...]
    inbox_seqs: tuple[Positive, ...]


class LogMark(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """`user_id` has read (or received) `conversation` up to `seq`, as of `at_ms`."""

    user_id: UserId
    conversation: ConversationId
    seq: Positive
    at_ms: NonNegative


class UserLog(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=USER_LOG_TAG):
    """Inbox appends and read / delivery marks of one user partition."""

    inbox: tuple[InboxAppend, ...] = ()
    reads: tuple[LogMark, ...] = ()
    deliveries: tuple[LogMark, ...] = ()
    ts_ms: NonNegative = 0


LogRecord: TypeAlias = MessageLog | UserLog

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final[msgspec.msgpack.Decoder[LogRecord]] = msgspec.msgpack.Decoder(LogRecord)


def encode_log(record: LogRecord) -> bytes:
    """The record value of a log record."""
    return _encoder.encode(record)


def decode_log(data: bytes | bytearray | memoryview) -> LogRecord:
    """Decode a log record value; `EnvelopeError` if it is not one."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a log record ({len(data)} bytes): {exc}") from exc


_T = TypeVar("_T")


def message_bytes(message: FanoutMessage) -> int:
    """Estimated bytes of `message` in a log record."""
    return len(message.msg_data) + len(message.attach) + _ITEM_OVERHEAD


def chunks(
    items: Iterable[_T], size: Callable[[_T], int], budget: int = RECORD_BUDGET_BYTES
) -> Iterator[Sequence[_T]]:
    """`items` in order, cut into runs whose estimated `size` stays within `budget` (an item
    larger than the budget travels alone: the topic's ``max.message.bytes`` is its limit)."""
    run: list[_T] = []
    used = 0
    for item in items:
        cost = size(item)
        if run and used + cost > budget:
            yield run
            run, used = [], 0
        run.append(item)
        used += cost
    if run:
        yield run
