"""Chat rooms: the model and the `RoomStore` protocol (docs/architecture.md, "Chat rooms").

A room is read diffusion: nothing is kept per member. What the store holds of a room is

- the room itself — created and closed by the business (`producers.rooms`), its settings
  fixed at creation (who may post, slow mode, largest message, how many recent messages it
  keeps) so that the room group may cache them;
- its **sequence** — the last msg id given out (`RoomStore.claim`) and the last one kept
  (`RoomStore.append`);
- its **recent window** — the last `Room.history` messages, encoded RoomMsg bodies, which a
  joining connection gets (`RoomStore.join`);
- its **presence per gate** — how many connections of each gate are in it. A gate counts its
  own members (join +1, leave -1, both order-independent); the room group delivers one record
  to each gate with a count above zero, and the member count is the sum over the gates that
  are alive (the live-gate registry of `store.routes`): a gate killed with its connections
  stops counting when its registry entry lapses, and its entries are removed then
  (`RoomStore.gates`) or when a gate of the same id starts again (`RoomStore.forget_gate`).
  A gate re-asserts its entries periodically (`RoomStore.ensure`), which also tells it when
  a room closed behind its back.

Joining and appending are atomic against each other: a join adds the gate and reads the
window in one step, an append adds to the window and reads the gates in one step. So every
message is either in a joiner's history (its msg id at most `Joined.last_seq`) or delivered
to the joiner's gate afterwards, or both — the gate drops what the history already had.

Implementations: `store.memory.rooms.MemoryRoomStore`, `store.redis.rooms.RedisRoomStore`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Annotated, Protocol

import msgspec

from schemas.codes import RoomPostPolicy
from schemas.ids import GateId, UserId

__all__ = [
    "Joined",
    "LiveGates",
    "Room",
    "RoomStore",
    "can_post",
]

#: The ids of the gates alive now (the live-gate registry), or None to count every gate.
LiveGates = Callable[[], Awaitable[Iterable[str]]]


class Room(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """A chat room and its settings (fixed at creation)."""

    room_id: Annotated[int, msgspec.Meta(ge=1)]
    name: str
    #: a `schemas.codes.RoomPostPolicy` value
    post_policy: int = RoomPostPolicy.EVERYONE
    #: who may post under `RoomPostPolicy.LISTED`
    posters: tuple[int, ...] = ()
    #: at most one message per user every `slow_mode_s` seconds; 0: no limit
    slow_mode_s: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: the largest msg_data accepted
    max_msg_bytes: Annotated[int, msgspec.Meta(ge=1)] = 4096
    #: how many recent messages the room keeps (and a joiner gets at most)
    history: Annotated[int, msgspec.Meta(ge=0)] = 50
    created_ms: int = 0
    #: when the business closed it; 0 while open
    closed_ms: int = 0

    @property
    def open(self) -> bool:
        return self.closed_ms == 0


def can_post(room: Room, user_id: int) -> bool:
    """Whether `user_id` may say something in `room` over the protocol."""
    if room.post_policy == RoomPostPolicy.NOBODY:
        return False
    if room.post_policy == RoomPostPolicy.LISTED:
        return user_id in room.posters
    return True


class Joined(msgspec.Struct, frozen=True, kw_only=True):
    """What a join found: the room, its newest messages and the presence of every gate."""

    room: Room
    #: encoded RoomMsg bodies, oldest first
    history: list[bytes]
    #: the msg id of the newest message kept when the gate joined: deliveries at or below it
    #: are in `history` already (or were never kept)
    last_seq: int
    #: connections in the room on every live gate, this join included
    member_count: int


class RoomStore(Protocol):
    """Where rooms, their recent windows and their presence per gate are kept."""

    async def allocate_id(self) -> int:
        """A new room id, never handed out before."""
        ...

    async def create(self, room: Room) -> None:
        """Store a new open room (its id from `allocate_id`)."""
        ...

    async def get(self, room_id: int) -> Room | None:
        """The room (open, or closed and still remembered), or None."""
        ...

    async def list_open(self, *, after: int = 0, limit: int = 100) -> list[Room]:
        """Open rooms with an id above `after`, by id."""
        ...

    async def close(self, room_id: int, *, closed_ms: int, keep_s: float) -> list[GateId] | None:
        """Close the room (forgetting its window and presence; the room itself is kept
        `keep_s` for inspection) and return the gates that had members; None when there is
        no such room. Closing a closed room changes nothing and returns no gates."""
        ...

    async def join(self, room_id: int, gate_id: GateId, *, history: int) -> Joined | None:
        """Count one more connection of `gate_id` in the room and read its newest `history`
        messages (at most the room's own number), atomically; None if the room is not open."""
        ...

    async def leave(self, room_id: int, gate_id: GateId, *, count: int = 1) -> None:
        """Count `count` connections of `gate_id` fewer in the room."""
        ...

    async def ensure(self, room_id: int, gate_id: GateId, count: int) -> bool:
        """Restore the gate's presence (`count` members) if it is missing — pruned while the
        gate looked dead, or lost by Redis; False when the room is no longer open."""
        ...

    async def forget_gate(self, gate_id: GateId) -> None:
        """Remove the presence of a gate that starts (again) with no connections."""
        ...

    async def gates(self, room_id: int) -> dict[GateId, int]:
        """Live gates with members in the room and their member counts; entries of gates
        that are not alive are removed."""
        ...

    async def claim(
        self, room_id: int, senders: Sequence[UserId], *, slow_mode_s: int
    ) -> list[int] | None:
        """A msg id for each send of `senders` in order, or minus the milliseconds a sender
        must still wait (slow mode: one message per user every `slow_mode_s`); None if the
        room is not open."""
        ...

    async def append(
        self, room_id: int, messages: Sequence[tuple[int, bytes]], *, window: int
    ) -> dict[GateId, int] | None:
        """Keep (msg id, RoomMsg body) pairs, ascending, in the room's window of `window`,
        and return the gates to deliver them to (as `gates`); None if the room is not open."""
        ...

    async def member_count(self, room_id: int) -> int:
        """Connections in the room on every live gate."""
        ...
