"""Running Lua scripts on Redis many at a time: one pipelined round trip, NOSCRIPT healed.

Every hot-state write is a script over the keys of one timeline (one hash tag, so one Redis
Cluster slot), and a batch touches many timelines: `ScriptRunner.run_many` sends one
``EVALSHA`` per timeline in one pipeline of independent commands — never a multi-slot
command — and, when Redis has lost the script (a restart, ``SCRIPT FLUSH``), loads it and
sends again only the calls that failed with NOSCRIPT. Scripts are written to be idempotent,
so a call that Redis ran before the connection broke may safely run again.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

__all__ = ["WINDOW_CUT", "Call", "ScriptRunner", "ttl_ms"]

#: (keys, args) of one script call
Call = tuple[Sequence[str], Sequence[Any]]

#: A Lua function for the trim scripts: `window_cut(key, upto, window)` — of a sorted set
#: scored by seq, the highest score that may go (beyond the newest `window` members, and only
#: what the document store has: at most `upto`), or nil when it is within its window.
WINDOW_CUT: Final = """
local function window_cut(key, upto, window)
  local n = redis.call('ZCARD', key)
  if n <= window then return nil end
  local cut = redis.call('ZRANGE', key, n - window - 1, n - window - 1, 'WITHSCORES')
  return math.min(tonumber(cut[2]), upto)
end
"""


def ttl_ms(ttl: datetime.timedelta) -> int:
    """A positive TTL in milliseconds, as ``PEXPIRE`` takes it."""
    if ttl <= datetime.timedelta(0):
        raise ValueError("a TTL must be positive")
    return max(1, round(ttl.total_seconds() * 1000))


class ScriptRunner:
    """One Lua script, registered once, run in pipelines."""

    def __init__(self, redis: Redis, source: str) -> None:
        self._redis = redis
        self._source = source
        self._script = redis.register_script(source)

    @property
    def sha(self) -> str:
        """The script's SHA1 (as ``EVALSHA`` names it)."""
        return str(self._script.sha)

    async def run(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One call (redis-py loads the script on NOSCRIPT)."""
        return await self._script(keys=list(keys), args=list(args))

    async def run_many(self, calls: Sequence[Call]) -> list[Any]:
        """Every call in one pipeline; results in order. Raises the first error that is not
        a NOSCRIPT healed by loading the script once."""
        if not calls:
            return []
        if len(calls) == 1:
            keys, args = calls[0]
            return [await self.run(keys, args)]
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in pending:
                    keys, args = calls[i]
                    pipe.evalsha(self.sha, len(keys), *keys, *args)
                answers = await pipe.execute(raise_on_error=False)
            failed: list[int] = []
            for i, answer in zip(pending, answers, strict=True):
                if isinstance(answer, Exception):
                    if attempt or not isinstance(answer, NoScriptError):
                        raise answer
                    failed.append(i)
                else:
                    results[i] = answer
            if not failed:
                return results
            pending = failed
            await self._redis.script_load(self._source)
        return results
