"""`CallStore` on Redis: a hash per call, a string per party's claim, one deadline zset.

Every change of a call is one script on its hash (one key, one Cluster slot), so it is
atomic against every other process; claims and deadlines are single-key commands beside it
(`store.calls` says why a step between them may be lost without harm). Hash fields are the
names of `store.calls.Call`'s fields.
"""

from __future__ import annotations

from typing import Any

import msgspec

from store.calls import Call, EndCause
from store.ids import UserId
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.scripts import ScriptRunner

__all__ = ["RedisCallStore"]

# KEYS[1] call hash; ARGV[1] TTL ms, then field, value pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] call hash; ARGV client type, now. Returns {won, fields}.
_ANSWER = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, {}} end
local won = 0
if state == 'ringing' then
  redis.call('HSET', KEYS[1], 'state', 'talking', 'answered_ms', ARGV[2],
    'callee_client_type', ARGV[1], 'caller_hb_ms', ARGV[2], 'callee_hb_ms', ARGV[2])
  won = 1
elseif redis.call('HGET', KEYS[1], 'callee_client_type') == ARGV[1]
    and tonumber(redis.call('HGET', KEYS[1], 'answered_ms') or '0') > 0 then
  won = 1
end
return {won, redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] call hash; ARGV heartbeat field, its time (kept if later), TTL ms.
_HEARTBEAT = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'ringing' or state == 'talking' then
  if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] call hash; ARGV hangup user, reason, cause, now. Returns {ended now, fields}.
_END = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'ringing' or state == 'talking' then
  redis.call('HSET', KEYS[1], 'state', 'ending', 'hangup_user', ARGV[1], 'reason', ARGV[2],
    'cause', ARGV[3], 'ended_ms', ARGV[4])
  return {1, redis.call('HGETALL', KEYS[1])}
end
return {0, redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] call hash; ARGV keep ms.
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'state', 'ended')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS[1] claim; ARGV[1] channel whose claim to drop.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] claim; ARGV old channel, new channel, TTL ms: replace a claim whose call is over.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] claim; ARGV channel, TTL ms: refresh the claim if it names the channel.
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


#: the `Call` fields that are not integers
_TEXT_FIELDS = frozenset({"channel", "state", "trace_id", "cause"})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(fields: Any) -> Call | None:
    if not fields:
        return None
    # HGETALL: a dict from redis-py, a flat list from a script
    items = iter(fields)
    pairs = fields.items() if isinstance(fields, dict) else zip(items, items, strict=True)
    raw: dict[str, str | int] = {}
    for name, value in pairs:
        field, text = _text(name), _text(value)
        raw[field] = text if field in _TEXT_FIELDS else int(text)
    return msgspec.convert(raw, Call)


class RedisCallStore:
    """`store.calls.CallStore` on Redis (module docstring)."""

    def __init__(self, redis: RedisClient, *, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._create = ScriptRunner(redis, _CREATE)
        self._answer = ScriptRunner(redis, _ANSWER)
        self._heartbeat = ScriptRunner(redis, _HEARTBEAT)
        self._end = ScriptRunner(redis, _END)
        self._finish = ScriptRunner(redis, _FINISH)
        self._release = ScriptRunner(redis, _RELEASE)
        self._take_over = ScriptRunner(redis, _TAKE_OVER)
        self._refresh = ScriptRunner(redis, _REFRESH)

    async def create(self, call: Call, *, deadline_ms: int, ttl_s: float) -> Call:
        """Store a new call (or return the existing one) and its deadline."""
        pairs: list[object] = []
        for name, value in msgspec.structs.asdict(call).items():
            # int() first: redis-py writes an int by repr(), which names an IntEnum
            pairs += [name, str(int(value)) if isinstance(value, int) else str(value)]
        stored = _decode(
            await self._create.run([self._keys.call(call.channel)], [_ms(ttl_s), *pairs])
        )
        assert stored is not None
        if stored.state.live:
            await self._redis.zadd(
                self._keys.call_deadlines(), {call.channel: deadline_ms}, nx=True
            )
        return stored

    async def get(self, channel: str) -> Call | None:
        """The call of `channel`."""
        return _decode(await self._redis.hgetall(self._keys.call(channel)) or None)

    async def claim(self, user_id: UserId, channel: str, *, ttl_s: float) -> str | None:
        """Claim the user for `channel` unless another live call holds them."""
        key = self._keys.call_claim(user_id)
        for _ in range(3):
            if await self._redis.set(key, channel, px=_ms(ttl_s), nx=True):
                return None
            held = await self.current(user_id)
            if held is None:
                continue  # it expired in between: try again
            if held == channel:
                return None
            other = await self.get(held)
            if other is not None and other.state.live:
                return held
            if await self._take_over.run([key], [held, channel, _ms(ttl_s)]):
                return None
        # Three changes under our feet: someone else is claiming this user right now.
        return await self.current(user_id) or channel

    async def current(self, user_id: UserId) -> str | None:
        """The channel the user's claim names."""
        value = await self._redis.get(self._keys.call_claim(user_id))
        return None if value is None else _text(value)

    async def answer(
        self, channel: str, client_type: int, now_ms: int, *, deadline_ms: int
    ) -> tuple[bool, Call | None]:
        """Let a callee device take a ringing call."""
        won, fields = await self._answer.run(
            [self._keys.call(channel)], [int(client_type), int(now_ms)]
        )
        call = _decode(fields)
        if won and call is not None and call.answered_ms == now_ms:
            await self.reschedule(channel, deadline_ms)
        return bool(won), call

    async def heartbeat(
        self, channel: str, user_id: UserId, now_ms: int, *, claim_ttl_s: float, call_ttl_s: float
    ) -> Call | None:
        """Record a party's heartbeat and refresh its claim and the call's TTL."""
        call = await self.get(channel)
        if call is None or not call.state.live or not call.party(user_id):
            return call
        field = "caller_hb_ms" if user_id == call.caller else "callee_hb_ms"
        call = _decode(
            await self._heartbeat.run([self._keys.call(channel)], [field, now_ms, _ms(call_ttl_s)])
        )
        await self._refresh.run([self._keys.call_claim(user_id)], [channel, _ms(claim_ttl_s)])
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
        """Move a live call to ending; its deadline becomes the retry."""
        ended, fields = await self._end.run(
            [self._keys.call(channel)], [int(hangup_user), int(reason), str(cause), int(now_ms)]
        )
        if ended:
            await self._redis.zadd(self._keys.call_deadlines(), {channel: retry_ms})
        return bool(ended), _decode(fields)

    async def finish(self, call: Call, *, keep_s: float) -> None:
        """Mark ended, release the claims that still name it, drop its deadline."""
        await self._finish.run([self._keys.call(call.channel)], [_ms(keep_s)])
        for user in (call.caller, call.callee):
            await self._release.run([self._keys.call_claim(user)], [call.channel])
        await self._redis.zrem(self._keys.call_deadlines(), call.channel)

    async def due(self, now_ms: int, limit: int) -> list[str]:
        """Channels due at `now_ms`, earliest first."""
        found = await self._redis.zrangebyscore(
            self._keys.call_deadlines(), "-inf", now_ms, start=0, num=limit
        )
        return [_text(c) for c in found]

    async def reschedule(self, channel: str, deadline_ms: int) -> None:
        """Set a live call's deadline (only if it has one)."""
        await self._redis.zadd(self._keys.call_deadlines(), {channel: deadline_ms}, xx=True)

    async def forget(self, channel: str) -> None:
        """Drop the deadline of a call that is gone."""
        await self._redis.zrem(self._keys.call_deadlines(), channel)
