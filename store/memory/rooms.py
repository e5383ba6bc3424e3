"""`RoomStore` in memory: the embedded mode's, and the twin in the contract tests."""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import msgspec

from schemas.ids import GateId, UserId
from store.clock import Clock, SystemClock
from store.rooms import Joined, LiveGates, Room

#: slow-mode entries kept before the lapsed ones are dropped
_SLOW_KEEP = 100_000


class _State(msgspec.Struct):
    room: Room
    seq: int = 0
    kept: int = 0
    recent: collections.deque[bytes] = msgspec.field(default_factory=collections.deque)
    gates: dict[GateId, int] = msgspec.field(default_factory=dict)
    #: closed rooms are forgotten at this time (ms)
    expires_ms: float = math.inf


class MemoryRoomStore:
    """The in-memory `RoomStore`; `live` says which gates are alive (None: all of them)."""

    def __init__(self, *, live: LiveGates | None = None, clock: Clock | None = None) -> None:
        self._live = live
        self._clock = clock or SystemClock()
        self._rooms: dict[int, _State] = {}
        self._next_id = 0
        #: user's next allowed send per room (ms), for slow mode
        self._slow: dict[tuple[int, int], int] = {}
        self._gate_rooms: dict[GateId, set[int]] = collections.defaultdict(set)

    def _state(self, room_id: int) -> _State | None:
        state = self._rooms.get(room_id)
        if state is not None and state.expires_ms <= self._clock.now_ms():
            del self._rooms[room_id]
            return None
        return state

    def _open(self, room_id: int) -> _State | None:
        state = self._state(room_id)
        return state if state is not None and state.room.open else None

    async def allocate_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def create(self, room: Room) -> None:
        self._rooms[room.room_id] = _State(room=room)

    async def get(self, room_id: int) -> Room | None:
        state = self._state(room_id)
        return None if state is None else state.room

    async def list_open(self, *, after: int = 0, limit: int = 100) -> list[Room]:
        ids = sorted(i for i, s in self._rooms.items() if i > after and s.room.open)
        return [self._rooms[i].room for i in ids[:limit]]

    async def close(self, room_id: int, *, closed_ms: int, keep_s: float) -> list[GateId] | None:
        state = self._state(room_id)
        if state is None:
            return None
        if not state.room.open:
            return []
        gates = list(state.gates)
        state.room = msgspec.structs.replace(state.room, closed_ms=closed_ms)
        state.gates.clear()
        state.recent.clear()
        state.expires_ms = self._clock.now_ms() + keep_s * 1000
        return gates

    async def join(self, room_id: int, gate_id: GateId, *, history: int) -> Joined | None:
        state = self._open(room_id)
        if state is None:
            return None
        state.gates[gate_id] = state.gates.get(gate_id, 0) + 1
        self._gate_rooms[gate_id].add(room_id)
        n = min(history, state.room.history)
        recent = list(state.recent)[-n:] if n > 0 else []
        counts = await self._live_counts(state)
        return Joined(
            room=state.room,
            history=recent,
            last_seq=state.kept,
            member_count=sum(counts.values()),
        )

    async def leave(self, room_id: int, gate_id: GateId, *, count: int = 1) -> None:
        state = self._state(room_id)
        if state is None or gate_id not in state.gates:
            return
        left = state.gates[gate_id] - count
        if left > 0:
            state.gates[gate_id] = left
        else:
            del state.gates[gate_id]
            self._gate_rooms[gate_id].discard(room_id)

    async def ensure(self, room_id: int, gate_id: GateId, count: int) -> bool:
        state = self._open(room_id)
        if state is None:
            return False
        state.gates.setdefault(gate_id, count)
        self._gate_rooms[gate_id].add(room_id)
        return True

    async def forget_gate(self, gate_id: GateId) -> None:
        for room_id in self._gate_rooms.pop(gate_id, set()):
            state = self._rooms.get(room_id)
            if state is not None:
                state.gates.pop(gate_id, None)

    async def gates(self, room_id: int) -> dict[GateId, int]:
        state = self._open(room_id)
        return {} if state is None else await self._live_counts(state)

    async def claim(
        self, room_id: int, senders: Sequence[UserId], *, slow_mode_s: int
    ) -> list[int] | None:
        state = self._open(room_id)
        if state is None:
            return None
        now = self._clock.now_ms()
        if len(self._slow) > _SLOW_KEEP:  # forget the waits that are over
            self._slow = {k: due for k, due in self._slow.items() if due > now}
        out: list[int] = []
        for user in senders:
            if slow_mode_s > 0:
                due = self._slow.get((room_id, user), 0)
                if due > now:
                    out.append(-(due - now))
                    continue
                self._slow[(room_id, user)] = now + slow_mode_s * 1000
            state.seq += 1
            out.append(state.seq)
        return out

    async def append(
        self, room_id: int, messages: Sequence[tuple[int, bytes]], *, window: int
    ) -> dict[GateId, int] | None:
        state = self._open(room_id)
        if state is None:
            return None
        for msg_id, body in messages:
            state.recent.append(body)
            state.kept = max(state.kept, msg_id)
        while len(state.recent) > window:
            state.recent.popleft()
        return await self._live_counts(state)

    async def member_count(self, room_id: int) -> int:
        return sum((await self.gates(room_id)).values())

    async def _live_counts(self, state: _State) -> dict[GateId, int]:
        if self._live is None:
            return {g: n for g, n in state.gates.items() if n > 0}
        live = set(await self._live())
        for gate in [g for g in state.gates if g not in live]:
            del state.gates[gate]
            self._gate_rooms[gate].discard(state.room.room_id)
        return {g: n for g, n in state.gates.items() if n > 0}
