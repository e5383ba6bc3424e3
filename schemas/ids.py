"""Identifier types and the conversation-id rule.

Ids are `NewType`s over `int` or `str`, so mypy keeps a user id from being passed where a
group id is expected while they cost nothing at run time.

Conversation ids name a timeline in `messages` and are the key of ``im.up.msg``:

- single (c2c): ``"s:<low>:<high>"`` — the two user ids in decimal, smaller first, so both
  sides of a chat map to the same id (and the same partition);
- group: ``"g:<group_id>"``.

Strings rather than a 64-bit mix of the two ids because a mix of two u64s into one cannot be
injective: two different chats could share a timeline. The text form is exact, readable in
Kafka and Mongo tooling, and short (at most 43 bytes). It is canonical: `parse_conversation_id`
accepts only what the builders produce (no leading zeros, no signs, no spaces).

Connection ids are assigned by a gate and must never repeat under the same gate id, across
restarts too: records for a connection that died may still be in the gate's topic when the
gate comes back. A gate therefore seeds its counter from something that grows across
restarts (e.g. boot time in milliseconds shifted left by 20 bits).
"""

from __future__ import annotations

import os
import random
import re
from typing import Final, NewType

from schemas.codes import SessionType

__all__ = [
    "MAX_U64",
    "ConnId",
    "ConversationId",
    "GateId",
    "GroupId",
    "TraceId",
    "UserId",
    "c2c_conversation_id",
    "conversation_id",
    "gate_id",
    "group_conversation_id",
    "new_trace_id",
    "parse_conversation_id",
]

UserId = NewType("UserId", int)
GroupId = NewType("GroupId", int)
#: A gate's name; it is also part of its topic name ``im.gate.<gate_id>``.
GateId = NewType("GateId", str)
#: A connection on one gate (see the module docstring on uniqueness).
ConnId = NewType("ConnId", int)
ConversationId = NewType("ConversationId", str)
#: 32 lowercase hex digits (a W3C trace-context trace-id).
TraceId = NewType("TraceId", str)

MAX_U64: Final = 0xFFFF_FFFF_FFFF_FFFF

_ID = r"[1-9][0-9]{0,19}"
_CONVERSATION_RE = re.compile(rf"s:({_ID}):({_ID})|g:({_ID})")
# Kafka topic names allow [a-zA-Z0-9._-] and 249 characters; leave room for "im.gate." and
# a ".dlq" suffix.
_GATE_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def _check_id(kind: str, value: int) -> int:
    if not 0 < value <= MAX_U64:
        raise ValueError(f"{kind} {value} is not in 1..2**64-1")
    return value


def c2c_conversation_id(a: UserId, b: UserId) -> ConversationId:
    """The conversation of a single chat between users `a` and `b` (order does not matter)."""
    low, high = sorted((_check_id("user id", a), _check_id("user id", b)))
    return ConversationId(f"s:{low}:{high}")


def group_conversation_id(group: GroupId) -> ConversationId:
    """The conversation of a group."""
    return ConversationId(f"g:{_check_id('group id', group)}")


def conversation_id(session_type: int, user: UserId, to_session_id: int) -> ConversationId:
    """The conversation a message from `user` to `to_session_id` belongs to.

    `session_type` and `to_session_id` are MsgData's fields: the peer's user id for a
    single chat, the group id for a group. Raises `ValueError` for an invalid session type or
    a zero id (proto3's "not set").
    """
    if session_type == SessionType.SINGLE:
        return c2c_conversation_id(user, UserId(to_session_id))
    if session_type == SessionType.GROUP:
        return group_conversation_id(GroupId(to_session_id))
    raise ValueError(f"session type {session_type} is neither SINGLE nor GROUP")


def parse_conversation_id(value: str) -> tuple[SessionType, tuple[int, ...]]:
    """Split a conversation id into its session type and ids.

    ``"s:3:7"`` gives ``(SessionType.SINGLE, (3, 7))``, ``"g:9"`` gives
    ``(SessionType.GROUP, (9,))``. Raises `ValueError` for anything not canonical.
    """
    match = _CONVERSATION_RE.fullmatch(value)
    if match is not None:
        low, high, group = match.groups()
        if group is not None:
            return SessionType.GROUP, (_check_id("group id", int(group)),)
        ids = (_check_id("user id", int(low)), _check_id("user id", int(high)))
        if ids[0] <= ids[1]:
            return SessionType.SINGLE, ids
    raise ValueError(f"{value!r} is not a canonical conversation id")


def gate_id(value: str) -> GateId:
    """Check that `value` can name a gate (and so a Kafka topic) and return it typed."""
    if _GATE_ID_RE.fullmatch(value) is None:
        raise ValueError(
            f"gate id {value!r} must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'"
        )
    return GateId(value)


_trace_random: Final = random.Random(os.urandom(32))
_trace_bits: Final = _trace_random.getrandbits
# A forked child must not repeat its parent's trace ids.
os.register_at_fork(after_in_child=lambda: _trace_random.seed(os.urandom(32)))


def new_trace_id() -> TraceId:
    """A random trace id (128 bits, hex). Not a secret: drawn from a generator seeded once
    from the OS (a fifth of the cost of ``os.urandom`` per id, which every frame pays)."""
    return TraceId(_trace_bits(128).to_bytes(16, "big").hex())
