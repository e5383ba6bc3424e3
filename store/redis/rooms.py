"""`RoomStore` on Redis (redis.asyncio): every key of a room shares the hash tag ``{r<id>}``
(`store.redis.keys`), so each script below touches one Redis Cluster slot.

- join: the room is open → HINCRBY the gate's presence, read the newest messages and the
  last msg id kept, and the presence of every gate — one script, so a message is either in
  the joiner's history or appended after its gate was counted (`store.rooms`);
- claim: the room is open → per sender, slow mode (``SET NX PX`` on the user's key; refused
  with its remaining PTTL) and HINCRBY of the room's msg id;
- append: the room is open → RPUSH the bodies, LTRIM to the window, raise the last kept msg
  id, read the presence — one script;
- close: mark the room closed, drop its window and presence, let the room itself expire.

Which gates are alive is the live-gate registry's (`store.redis.routes`: a key per gate with
the heartbeat TTL); presence of a gate whose key lapsed is removed when it is read.
Rooms live in Redis only (docs/architecture.md, "Chat rooms": run it with persistence).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, cast

import msgspec

from schemas.ids import GateId, UserId
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.rooms import Joined, Room

__all__ = ["RedisRoomStore"]

log = logging.getLogger(__name__)

# KEYS meta, gates, recent; ARGV gate id, history wanted
_JOIN: Final = """
local room = redis.call('HGET', KEYS[1], 'r')
if not room or redis.call('HEXISTS', KEYS[1], 'c') == 1 then return false end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local n = tonumber(ARGV[2])
local hist = {}
if n > 0 then hist = redis.call('LRANGE', KEYS[3], -n, -1) end
return {room, redis.call('HGET', KEYS[1], 'h') or '0', hist, redis.call('HGETALL', KEYS[2])}
"""

# KEYS gates; ARGV gate id, count
_LEAVE: Final = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"""

# KEYS meta, gates; ARGV gate id, count
_ENSURE: Final = """
if redis.call('HEXISTS', KEYS[1], 'r') == 0 or redis.call('HEXISTS', KEYS[1], 'c') == 1 then
  return 0
end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# KEYS meta, slow keys of each sender; ARGV slow mode ms (0: off)
_CLAIM: Final = """
if redis.call('HEXISTS', KEYS[1], 'r') == 0 or redis.call('HEXISTS', KEYS[1], 'c') == 1 then
  return false
end
local slow = tonumber(ARGV[1])
local out = {}
for i = 2, #KEYS do
  if slow > 0 and not redis.call('SET', KEYS[i], '1', 'NX', 'PX', slow) then
    out[i - 1] = -math.max(1, redis.call('PTTL', KEYS[i]))
  else
    out[i - 1] = redis.call('HINCRBY', KEYS[1], 's', 1)
  end
end
return out
"""

# KEYS meta, recent, gates; ARGV window, last msg id, bodies...
_APPEND: Final = """
if redis.call('HEXISTS', KEYS[1], 'r') == 0 or redis.call('HEXISTS', KEYS[1], 'c') == 1 then
  return false
end
local window = tonumber(ARGV[1])
if window > 0 then
  for i = 3, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
  redis.call('LTRIM', KEYS[2], -window, -1)
end
if tonumber(redis.call('HGET', KEYS[1], 'h') or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'h', ARGV[2])
end
return redis.call('HGETALL', KEYS[3])
"""

# KEYS meta, gates, recent; ARGV closed ms, keep ms
_CLOSE: Final = """
if redis.call('HEXISTS', KEYS[1], 'r') == 0 then return false end
if redis.call('HEXISTS', KEYS[1], 'c') == 1 then return {} end
redis.call('HSET', KEYS[1], 'c', ARGV[1])
local gates = redis.call('HKEYS', KEYS[2])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return gates
"""

# KEYS gates; ARGV gate ids to remove (their registry entry lapsed)
_PRUNE: Final = """
for i = 1, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
return #ARGV
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisRoomStore:
    """`RoomStore` on a Redis client created with ``decode_responses=False``."""

    def __init__(self, redis: RedisClient, *, keys: RedisKeys | None = None) -> None:
        self._redis = redis
        self._keys = keys or RedisKeys()
        self._join = redis.register_script(_JOIN)
        self._leave = redis.register_script(_LEAVE)
        self._ensure = redis.register_script(_ENSURE)
        self._claim = redis.register_script(_CLAIM)
        self._append = redis.register_script(_APPEND)
        self._close = redis.register_script(_CLOSE)
        self._prune = redis.register_script(_PRUNE)
        self._decoder = msgspec.json.Decoder(Room)

    async def allocate_id(self) -> int:
        return int(await self._redis.incr(self._keys.room_next_id()))

    async def create(self, room: Room) -> None:
        k = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(k.room_meta(room.room_id), "r", msgspec.json.encode(room))
            pipe.zadd(k.rooms_open(), {str(room.room_id): room.room_id})
            await pipe.execute()

    async def get(self, room_id: int) -> Room | None:
        values = await self._redis.hmget(self._keys.room_meta(room_id), ["r", "c"])
        raw, closed = values
        if raw is None:
            return None
        room = self._decoder.decode(raw)
        if closed is not None:
            room = msgspec.structs.replace(room, closed_ms=int(closed))
        return room

    async def list_open(self, *, after: int = 0, limit: int = 100) -> list[Room]:
        k = self._keys
        ids = await self._redis.zrangebyscore(
            k.rooms_open(), f"({after}", "+inf", start=0, num=limit
        )
        rooms = []
        for raw_id in cast("list[bytes]", ids):
            room = await self.get(int(_text(raw_id)))
            if room is not None and room.open:
                rooms.append(room)
        return rooms

    async def close(self, room_id: int, *, closed_ms: int, keep_s: float) -> list[GateId] | None:
        k = self._keys
        gates = await self._close(
            keys=[k.room_meta(room_id), k.room_gates(room_id), k.room_recent(room_id)],
            args=[closed_ms, max(1, round(keep_s * 1000))],
        )
        if gates is None:
            return None
        # The open index is another slot: a separate command (a listing re-checks each room).
        await self._redis.zrem(k.rooms_open(), str(room_id))
        return [GateId(_text(g)) for g in gates]

    async def join(self, room_id: int, gate_id: GateId, *, history: int) -> Joined | None:
        k = self._keys
        found = await self._join(
            keys=[k.room_meta(room_id), k.room_gates(room_id), k.room_recent(room_id)],
            args=[gate_id, max(0, history)],
        )
        if found is None:
            return None
        await self._redis.sadd(k.gate_rooms(gate_id), str(room_id))
        raw, last, recent, presence = found
        room = self._decoder.decode(raw)
        n = min(history, room.history)
        counts = await self._live(room_id, _pairs(presence))
        return Joined(
            room=room,
            history=[bytes(b) for b in recent][-n:] if n > 0 else [],
            last_seq=int(last),
            member_count=sum(counts.values()),
        )

    async def leave(self, room_id: int, gate_id: GateId, *, count: int = 1) -> None:
        await self._leave(keys=[self._keys.room_gates(room_id)], args=[gate_id, count])

    async def ensure(self, room_id: int, gate_id: GateId, count: int) -> bool:
        k = self._keys
        ok = await self._ensure(
            keys=[k.room_meta(room_id), k.room_gates(room_id)], args=[gate_id, count]
        )
        if ok:
            await self._redis.sadd(k.gate_rooms(gate_id), str(room_id))
        return bool(ok)

    async def forget_gate(self, gate_id: GateId) -> None:
        k = self._keys
        rooms = await self._redis.smembers(k.gate_rooms(gate_id))
        if rooms:
            async with self._redis.pipeline(transaction=False) as pipe:
                for raw in rooms:
                    pipe.hdel(k.room_gates(int(_text(raw))), gate_id)
                await pipe.execute()
        await self._redis.delete(k.gate_rooms(gate_id))

    async def gates(self, room_id: int) -> dict[GateId, int]:
        presence = await self._redis.hgetall(self._keys.room_gates(room_id))
        return await self._live(room_id, {_text(g): int(n) for g, n in presence.items()})

    async def claim(
        self, room_id: int, senders: Sequence[UserId], *, slow_mode_s: int
    ) -> list[int] | None:
        k = self._keys
        out = await self._claim(
            keys=[k.room_meta(room_id), *(k.room_slow(room_id, u) for u in senders)],
            args=[slow_mode_s * 1000],
        )
        return None if out is None else [int(v) for v in out]

    async def append(
        self, room_id: int, messages: Sequence[tuple[int, bytes]], *, window: int
    ) -> dict[GateId, int] | None:
        k = self._keys
        last = max((msg_id for msg_id, _ in messages), default=0)
        presence = await self._append(
            keys=[k.room_meta(room_id), k.room_recent(room_id), k.room_gates(room_id)],
            args=[window, last, *(body for _, body in messages)],
        )
        if presence is None:
            return None
        return await self._live(room_id, _pairs(presence))

    async def member_count(self, room_id: int) -> int:
        return sum((await self.gates(room_id)).values())

    async def _live(self, room_id: int, presence: dict[str, int]) -> dict[GateId, int]:
        """The entries of `presence` whose gate is alive; the others are removed."""
        if not presence:
            return {}
        gates = list(presence)
        alive = await self._redis.mget([self._keys.gate(g) for g in gates])
        dead = [g for g, value in zip(gates, alive, strict=True) if value is None]
        if dead:
            await self._prune(keys=[self._keys.room_gates(room_id)], args=dead)
            log.info("room %d: removed the presence of lapsed gate(s) %s", room_id, dead)
        return {GateId(g): presence[g] for g in gates if g not in dead and presence[g] > 0}


def _pairs(flat: Sequence[Any]) -> dict[str, int]:
    """HGETALL's flat reply inside a script (field, value, ...) as a dict."""
    items = cast("list[bytes]", list(flat))
    return {_text(items[i]): int(items[i + 1]) for i in range(0, len(items), 2)}
