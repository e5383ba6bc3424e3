"""`LoginThrottle` on Redis: one hash per subject (`store.redis.keys.RedisKeys.rate_limit`,
scope ``login-account`` or ``login-address``) holding ``n`` (failures), ``last`` (the last
failure, ms) and ``until`` (when the next attempt may come, ms).

A failure is one script on the subject's key (count, arm the back-off, re-arm the TTL), so
concurrent failures on several gates never lose a count; a check reads ``until`` of each
subject in one pipelined round trip (one script call per subject: each is its own slot of a
Redis Cluster). Times come from the caller's clock (the gates' wall
clocks, which NTP keeps within milliseconds of each other), so the contract tests can move
time instead of sleeping; the key's TTL (`window_s` + `max_s`) only collects what is
forgotten anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from store.clock import Clock, SystemClock
from store.login_throttle import Subject, ThrottlePolicy
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.scripts import ScriptRunner

__all__ = ["RedisLoginThrottle"]

# KEYS[1] the subject; ARGV: now ms, free failures, initial ms, max ms, window ms.
# Returns the wait armed (ms).
_FAIL: Final = """
local now, free = tonumber(ARGV[1]), tonumber(ARGV[2])
local initial, max, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'n', 'last')
local n, last = tonumber(state[1] or '0'), tonumber(state[2] or '0')
if now - last > window then n = 0 end
n = n + 1
local wait = 0
if n > free then wait = math.min(max, initial * 2 ^ math.min(n - free - 1, 64)) end
wait = math.floor(wait + 0.5)
redis.call('HSET', KEYS[1], 'n', n, 'last', now, 'until', now + wait)
redis.call('PEXPIRE', KEYS[1], window + max)
return wait
"""

# KEYS[1] the subject; ARGV[1] now ms, ARGV[2] window ms. Returns the wait left (ms).
_WAIT: Final = """
local state = redis.call('HMGET', KEYS[1], 'last', 'until')
if not state[1] then return 0 end
local now = tonumber(ARGV[1])
if now - tonumber(state[1]) > tonumber(ARGV[2]) then return 0 end
local left = tonumber(state[2]) - now
if left < 0 then return 0 end
return left
"""


class RedisLoginThrottle:
    """Failure counters in Redis, shared by every gate (module docstring)."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        keys: RedisKeys,
        policy: ThrottlePolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.policy = policy or ThrottlePolicy()
        self._redis = redis
        self._keys = keys
        self._clock = clock or SystemClock()
        self._fail = ScriptRunner(redis, _FAIL)
        self._wait = ScriptRunner(redis, _WAIT)

    def _key(self, subject: Subject) -> str:
        return self._keys.rate_limit(subject.kind.value, subject.name)

    async def wait_s(self, subjects: Sequence[Subject]) -> float:
        if not subjects:
            return 0.0
        now, window = self._clock.now_ms(), round(self.policy.window_s * 1000)
        answers = await self._wait.run_many(
            [([self._key(subject)], [now, window]) for subject in subjects]
        )
        return max(int(a) for a in answers) / 1000

    async def failed(self, subjects: Sequence[Subject]) -> float:
        if not subjects:
            return 0.0
        p = self.policy
        now = self._clock.now_ms()
        answers = await self._fail.run_many(
            [
                (
                    [self._key(subject)],
                    [
                        now,
                        p.free(subject.kind),
                        round(p.initial_s * 1000),
                        round(p.max_s * 1000),
                        round(p.window_s * 1000),
                    ],
                )
                for subject in subjects
            ]
        )
        return max(int(a) for a in answers) / 1000

    async def succeeded(self, subject: Subject) -> None:
        await self._redis.delete(self._key(subject))
