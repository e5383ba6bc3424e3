"""Calls (VoIP signalling): the model and the `CallStore` protocol.

CoffeeChat keeps a call in its gate's memory, so both parties must sit on one gate and a
gate restart drops the call. Here a call lives where every process sees it and outlives any
of them (Redis on the real services, `store.redis.calls`): the call group of any process
can take the next signal of any call, and a killed gate or consumer loses nothing but
connections, which reconnect.

A call is one record, named by its channel (unique per call), that only moves forward::

    ringing --answer--> talking
       |                   |
       +------end----------+--> ending --finish--> ended

Every move is one atomic step on the call's record (one Redis script on one key): two
parties signalling at once, two devices answering at once, a bye racing a timeout — exactly
one of them wins, and the others read the state it left. ``ending`` records who hung up and
why; the effects of the end (ByeNotify, the AVCHAT message, the business event) are
published after it and `CallStore.finish` comes last, so a process that dies in between
leaves an ``ending`` call that the next look (a replay, or the sweep of any call-group
member) finishes — every effect of an end is idempotent.

Besides the record:

- a *claim* per user in a call (``user -> channel``): the busy check, and what a
  VoipHeartbeat (which names no call) belongs to. A claim whose call is over is free.
  Claims expire by themselves (`claim_ttl_s`, refreshed by heartbeats), so a record lost by
  Redis cannot keep a user busy for ever.
- a *deadline* per live call: when the sweep must look at it next (a ringing call's invite
  timeout, a talking call's oldest heartbeat plus the heartbeat timeout, an ending call's
  retry). The deadlines are one sorted set that any member of the call group reads
  (`consumers.call`): the timer survives the loss of any process, like the delivery timers
  on ``im.timer``, but a heartbeat moves it with one write instead of one Kafka record.

Implementations: `store.memory.calls.MemoryCallStore`, `store.redis.calls.RedisCallStore`;
one contract test runs against both.
"""

from __future__ import annotations

import enum
from typing import Protocol

import msgspec

from store.ids import UserId

__all__ = ["Call", "CallState", "CallStore", "EndCause"]


class CallState(enum.StrEnum):
    """Where a call is (it only moves forward, in this order)."""

    RINGING = "ringing"
    TALKING = "talking"
    ENDING = "ending"
    ENDED = "ended"

    @property
    def live(self) -> bool:
        """Whether the call still holds its parties (not ending or ended)."""
        return self in (CallState.RINGING, CallState.TALKING)


class EndCause(enum.StrEnum):
    """Why a call ended, in more detail than the wire's VoipByeReason (business events)."""

    #: a party sent VoipByeReq (cancel, reject or hang-up)
    BYE = "bye"
    #: the callee was in another call
    BUSY = "busy"
    #: the callee had no device online
    OFFLINE = "offline"
    #: nobody answered within ``[calls] invite_timeout_s``
    NO_ANSWER = "no_answer"
    #: a party sent no VoipHeartbeat for ``[calls] heartbeat_timeout_s``
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"


class Call(msgspec.Struct, kw_only=True, frozen=True):
    """One call, as its record holds it."""

    channel: str
    caller: UserId
    callee: UserId
    #: VoipInviteType: 1 voice, 2 video
    call_type: int
    #: the caller's device (a user has one route per client type)
    caller_client_type: int
    state: CallState
    created_ms: int
    trace_id: str = ""
    #: when the callee answered (0: never)
    answered_ms: int = 0
    #: the callee device that answered (-1: none)
    callee_client_type: int = -1
    caller_hb_ms: int = 0
    callee_hb_ms: int = 0
    ended_ms: int = 0
    #: the party that ended it, 0 for the server (a timeout, an offline callee)
    hangup_user: int = 0
    #: VoipByeReason of the end
    reason: int = 0
    cause: str = ""

    def party(self, user_id: int) -> bool:
        """Whether `user_id` is the caller or the callee."""
        return user_id in (self.caller, self.callee)

    def peer(self, user_id: int) -> UserId:
        """The other party of `user_id` (a party)."""
        return self.callee if user_id == self.caller else self.caller

    @property
    def duration_s(self) -> int:
        """Seconds from the answer to the end (0 for a call never answered or not ended)."""
        if not self.answered_ms or not self.ended_ms:
            return 0
        return max(0, self.ended_ms - self.answered_ms) // 1000


class CallStore(Protocol):
    """Where calls, their parties' claims and their deadlines are kept (module docstring).

    Times are unix milliseconds, TTLs seconds.
    """

    async def create(self, call: Call, *, deadline_ms: int, ttl_s: float) -> Call:
        """Store `call` (state ringing) with its first deadline, unless a call of that channel
        exists: then return that one unchanged (a replayed invite creates nothing)."""
        ...

    async def get(self, channel: str) -> Call | None:
        """The call of `channel` (None if unknown or expired)."""
        ...

    async def claim(self, user_id: UserId, channel: str, *, ttl_s: float) -> str | None:
        """Make `channel` the user's call unless they are in another live call: return None
        when the claim holds (new, or already this channel's), else the other channel."""
        ...

    async def current(self, user_id: UserId) -> str | None:
        """The channel the user's claim names (the call may be over)."""
        ...

    async def answer(
        self, channel: str, client_type: int, now_ms: int, *, deadline_ms: int
    ) -> tuple[bool, Call | None]:
        """Let the callee device of `client_type` take a ringing call (state talking, both
        heartbeats now, the next deadline `deadline_ms`). True when that device holds the
        call (it won now, or it had won before: a replay); the call as it is after."""
        ...

    async def heartbeat(
        self, channel: str, user_id: UserId, now_ms: int, *, claim_ttl_s: float, call_ttl_s: float
    ) -> Call | None:
        """Record a party's heartbeat, sent at `now_ms`, on a live call (a heartbeat older
        than the one recorded changes nothing: a replay) and refresh its claim and the
        call's TTL; the call after."""
        ...

    async def end(
        self,
        channel: str,
        *,
        hangup_user: int,
        reason: int,
        cause: EndCause,
        now_ms: int,
        retry_ms: int,
    ) -> tuple[bool, Call | None]:
        """Move a live call to ending with who, why and when, its deadline at `retry_ms`
        (when the sweep finishes it if nobody did). True if this call ended it now; False
        if it was ending or ended already (the call as it is is returned either way)."""
        ...

    async def finish(self, call: Call, *, keep_s: float) -> None:
        """An ending call's effects are out: state ended (kept `keep_s` for replays), the
        parties' claims released if they still name it, its deadline removed."""
        ...

    async def due(self, now_ms: int, limit: int) -> list[str]:
        """Channels whose deadline is at or before `now_ms`, earliest first."""
        ...

    async def reschedule(self, channel: str, deadline_ms: int) -> None:
        """Set the deadline of a live call."""
        ...

    async def forget(self, channel: str) -> None:
        """Remove the deadline of a call that no longer exists."""
        ...
