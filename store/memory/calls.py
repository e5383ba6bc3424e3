"""`CallStore` in memory (embedded mode and tests); the same semantics as Redis's."""

from __future__ import annotations

import msgspec

from store.calls import Call, CallState, EndCause
from store.clock import Clock, SystemClock
from store.ids import UserId


class MemoryCallStore:
    """In-memory `store.calls.CallStore`. Every method runs without awaiting in between, so
    each is atomic on the event loop, as each Redis script is on its server."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        #: channel -> (call, expires at ms)
        self._calls: dict[str, tuple[Call, int]] = {}
        #: user -> (channel, expires at ms)
        self._claims: dict[UserId, tuple[str, int]] = {}
        self._deadlines: dict[str, int] = {}

    def _now(self) -> int:
        return self._clock.now_ms()

    def _get(self, channel: str) -> Call | None:
        found = self._calls.get(channel)
        if found is None or found[1] <= self._now():
            self._calls.pop(channel, None)
            return None
        return found[0]

    def _put(self, call: Call) -> None:
        self._calls[call.channel] = (call, self._calls[call.channel][1])

    async def create(self, call: Call, *, deadline_ms: int, ttl_s: float) -> Call:
        """Store a new call (or return the existing one)."""
        existing = self._get(call.channel)
        if existing is not None:
            return existing
        self._calls[call.channel] = (call, self._now() + round(ttl_s * 1000))
        self._deadlines[call.channel] = deadline_ms
        return call

    async def get(self, channel: str) -> Call | None:
        """The call of `channel`."""
        return self._get(channel)

    async def claim(self, user_id: UserId, channel: str, *, ttl_s: float) -> str | None:
        """Claim the user for `channel` unless another live call holds them."""
        held = await self.current(user_id)
        if held is not None and held != channel:
            other = self._get(held)
            if other is not None and other.state.live:
                return held
        self._claims[user_id] = (channel, self._now() + round(ttl_s * 1000))
        return None

    async def current(self, user_id: UserId) -> str | None:
        """The channel the user's claim names."""
        found = self._claims.get(user_id)
        if found is None or found[1] <= self._now():
            self._claims.pop(user_id, None)
            return None
        return found[0]

    async def answer(
        self, channel: str, client_type: int, now_ms: int, *, deadline_ms: int
    ) -> tuple[bool, Call | None]:
        """Let a callee device take a ringing call."""
        call = self._get(channel)
        if call is None:
            return False, None
        if call.state is CallState.RINGING:
            call = msgspec.structs.replace(
                call,
                state=CallState.TALKING,
                answered_ms=now_ms,
                callee_client_type=client_type,
                caller_hb_ms=now_ms,
                callee_hb_ms=now_ms,
            )
            self._put(call)
            self._deadlines[channel] = deadline_ms
            return True, call
        return call.callee_client_type == client_type and call.answered_ms > 0, call

    async def heartbeat(
        self, channel: str, user_id: UserId, now_ms: int, *, claim_ttl_s: float, call_ttl_s: float
    ) -> Call | None:
        """Record a party's heartbeat and refresh its claim and the call's TTL."""
        call = self._get(channel)
        if call is None or not call.state.live or not call.party(user_id):
            return call
        if user_id == call.caller:
            call = msgspec.structs.replace(call, caller_hb_ms=max(call.caller_hb_ms, now_ms))
        else:
            call = msgspec.structs.replace(call, callee_hb_ms=max(call.callee_hb_ms, now_ms))
        self._calls[channel] = (call, self._now() + round(call_ttl_s * 1000))
        if await self.current(user_id) == channel:
            self._claims[user_id] = (channel, self._now() + round(claim_ttl_s * 1000))
        return call

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
        """Move a live call to ending."""
        call = self._get(channel)
        if call is None or not call.state.live:
            return False, call
        call = msgspec.structs.replace(
            call,
            state=CallState.ENDING,
            ended_ms=now_ms,
            hangup_user=hangup_user,
            reason=reason,
            cause=str(cause),
        )
        self._put(call)
        self._deadlines[channel] = retry_ms
        return True, call

    async def finish(self, call: Call, *, keep_s: float) -> None:
        """Mark ended, release claims that still name it, drop its deadline."""
        stored = self._get(call.channel)
        if stored is not None:
            self._calls[call.channel] = (
                msgspec.structs.replace(stored, state=CallState.ENDED),
                self._now() + round(keep_s * 1000),
            )
        for user in (call.caller, call.callee):
            if await self.current(user) == call.channel:
                del self._claims[user]
        self._deadlines.pop(call.channel, None)

    async def due(self, now_ms: int, limit: int) -> list[str]:
        """Channels due at `now_ms`, earliest first."""
        due = sorted((d, c) for c, d in self._deadlines.items() if d <= now_ms)
        return [c for _, c in due[:limit]]

    async def reschedule(self, channel: str, deadline_ms: int) -> None:
        """Set a live call's deadline."""
        if channel in self._deadlines:
            self._deadlines[channel] = deadline_ms

    async def forget(self, channel: str) -> None:
        """Drop the deadline of a call that is gone."""
        self._deadlines.pop(channel, None)
