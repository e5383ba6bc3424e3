"""Chat rooms on a gate: membership of its connections, and the fan-out from memory.

A room is read diffusion (docs/architecture.md, "Chat rooms"): the room group sends one
`RoomDeliver` per gate that has members, and the gate writes each message to its own
members' connections — the RoomMsg body encoded once by the room group, a frame header per
connection. Membership is per connection and ends with it; the gate answers join, leave and
member count itself (`schemas.commands`: these have no uplink topic):

- **join** (RoomJoinReq 0x0812): the connection becomes a *pending* member first, then the
  store counts it and reads the room's newest messages in one step (`store.rooms`). A
  delivery that reaches the gate meanwhile is held for it; once the join is answered, held
  messages newer than the history follow it, in order, and later deliveries skip what the
  history had — nothing is missed or doubled between the two.
- **leave** (0x0814), the end of the connection, a close of the room (`RoomClose`, or
  found closed by the periodic presence check): the member is removed; the store's count
  of this gate goes down by one (not for a close, whose presence is gone already).
- **send** (RoomSendReq 0x0816) is published to ``im.up.room`` for the room group, after two
  checks here: the connection is in the room, and the user's own rate on this gate
  (`[rooms] user_rate_per_s`) — refused at once, nothing published.
- **slow clients**: a member whose connection has more than `[rooms] slow_backlog_frames`
  frames waiting is dropped from the room with RoomExitNotify TOO_SLOW instead of being
  buffered: one slow reader never slows the gate or its room.
- **presence**: every `[rooms] presence_interval_s` the gate re-asserts its count in each
  room it has members in (restoring one removed while the gate looked dead); a room found
  closed is closed here as if its `RoomClose` had arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from gateway.ratelimit import TokenBucket
from schemas.codes import ExtResultCode, RoomExitReason
from schemas.commands import Cmd
from schemas.envelope import RoomClose, RoomDeliver, RoomItem
from schemas.frame import SharedPush
from schemas.ids import GateId, TraceId
from schemas.pb.coffeebus import ext_pb2
from schemas.settings import RoomSettings
from store.rooms import RoomStore
from telemetry.metrics import ROOM_DELIVERIES, ROOM_DROPPED_SLOW

__all__ = ["GateRooms", "Refused", "RoomConnection"]

log = logging.getLogger(__name__)

#: A connection's history wish above the room's own number is cut to it by the store.
_ALL_HISTORY = 1_000_000


class RoomConnection(Protocol):
    """What the room code needs of a `gateway.session.GateConnection`."""

    @property
    def conn_id(self) -> int: ...

    @property
    def user_id(self) -> int: ...

    @property
    def backlog(self) -> int:
        """Frames written but not yet sent to the client."""
        ...

    def queue(self, command_id: int, body: bytes, seq: int | None = None) -> None: ...

    def push(self, command_id: int, pushes: Sequence[SharedPush]) -> None:
        """Write these pushes now (behind anything queued)."""
        ...

    def pump(self) -> None: ...


class Refused(Exception):
    """A room request the gate answers with ErrorRsp."""

    def __init__(self, code: ExtResultCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class _Member:
    """One connection in one room."""

    __slots__ = ("after", "conn", "held")

    def __init__(self, conn: RoomConnection) -> None:
        self.conn = conn
        #: deliveries of msg ids up to this were in the join's history; -1 while pending
        self.after = -1
        #: deliveries that arrived while the join was pending
        self.held: list[RoomItem] | None = None


class GateRooms:
    """The rooms of one gate (see the module docstring)."""

    def __init__(
        self,
        *,
        gate_id: GateId,
        store: RoomStore,
        settings: RoomSettings,
        spawn: Callable[[Awaitable[None], str], None],
    ) -> None:
        self.gate_id = gate_id
        self._store = store
        self._settings = settings
        self._spawn = spawn
        #: room id -> conn id -> member
        self._rooms: dict[int, dict[int, _Member]] = {}
        #: conn id -> rooms it is (or is joining) in
        self._by_conn: dict[int, set[int]] = {}
        #: user id -> room send rate on this gate
        self._buckets: dict[int, TokenBucket] = {}
        self.deliveries = 0
        self.dropped_slow = 0

    # -- queries ------------------------------------------------------------------------------

    def members(self, room_id: int) -> int:
        """Connections of this gate in the room (joined or joining)."""
        return len(self._rooms.get(room_id, ()))

    def rooms_of(self, conn_id: int) -> frozenset[int]:
        return frozenset(self._by_conn.get(conn_id, ()))

    # -- requests ------------------------------------------------------------------------------

    async def join(self, conn: RoomConnection, seq: int, req: ext_pb2.RoomJoinReq) -> None:
        """Answer a RoomJoinReq: RoomJoinRsp, then what was held (module docstring)."""
        _check_user(conn, req.user_id)
        room_id = req.room_id
        if room_id <= 0:
            raise Refused(ExtResultCode.INVALID_PARAMETER, "room_id must be positive")
        mine = self._by_conn.setdefault(conn.conn_id, set())
        if room_id in mine:
            raise Refused(ExtResultCode.INVALID_PARAMETER, f"already in room {room_id}")
        if len(mine) >= self._settings.max_rooms_per_connection:
            raise Refused(
                ExtResultCode.TOO_LARGE,
                f"in {len(mine)} rooms already (at most "
                f"{self._settings.max_rooms_per_connection} per connection)",
            )
        member = _Member(conn)
        mine.add(room_id)
        self._rooms.setdefault(room_id, {})[conn.conn_id] = member
        wanted = req.history_count or _ALL_HISTORY
        try:
            joined = await self._store.join(room_id, self.gate_id, history=wanted)
        except Exception:
            self._forget(room_id, conn.conn_id)
            raise
        if self._rooms.get(room_id, {}).get(conn.conn_id) is not member:
            # The connection or the room closed while joining: take the count back.
            if joined is not None:
                await self._store.leave(room_id, self.gate_id)
            raise Refused(ExtResultCode.NOT_FOUND, f"room {room_id} closed while joining")
        if joined is None:
            self._forget(room_id, conn.conn_id)
            raise Refused(ExtResultCode.NOT_FOUND, f"no open room {room_id}")
        room = joined.room
        head = ext_pb2.RoomJoinRsp(
            room_id=room_id,
            name=room.name,
            member_count=min(joined.member_count, 0xFFFF_FFFF),
            slow_mode_s=room.slow_mode_s,
            max_msg_bytes=room.max_msg_bytes,
            post_policy=ext_pb2.RoomPostPolicy.ValueType(room.post_policy),
        ).SerializeToString()
        # Field 4 (history) appended as encoded RoomMsg bytes: a protobuf message may carry
        # its fields in any order, so the stored bodies need no decode and re-encode.
        body = head + b"".join(_field_bytes(4, msg) for msg in joined.history)
        conn.queue(Cmd.ROOM_JOIN_RSP, body, seq)
        member.after = joined.last_seq
        held, member.held = member.held, None
        for item in held or ():
            if item.msg_id > member.after and item.skip_conn != conn.conn_id:
                conn.queue(Cmd.ROOM_MSG, item.body)

    async def leave(self, conn: RoomConnection, seq: int, req: ext_pb2.RoomLeaveReq) -> None:
        """Answer a RoomLeaveReq (also when the connection was not in the room)."""
        _check_user(conn, req.user_id)
        member = self._forget(req.room_id, conn.conn_id)
        if member is not None and member.after >= 0:
            await self._store.leave(req.room_id, self.gate_id)
        conn.queue(
            Cmd.ROOM_LEAVE_RSP, ext_pb2.RoomLeaveRsp(room_id=req.room_id).SerializeToString(), seq
        )

    async def member_count(
        self, conn: RoomConnection, seq: int, req: ext_pb2.RoomMemberCountReq
    ) -> None:
        """Answer a RoomMemberCountReq: connections in the room on every live gate."""
        _check_user(conn, req.user_id)
        room = await self._store.get(req.room_id) if req.room_id > 0 else None
        if room is None or not room.open:
            raise Refused(ExtResultCode.NOT_FOUND, f"no open room {req.room_id}")
        count = await self._store.member_count(req.room_id)
        rsp = ext_pb2.RoomMemberCountRsp(room_id=req.room_id, member_count=min(count, 0xFFFF_FFFF))
        conn.queue(Cmd.ROOM_MEMBER_COUNT_RSP, rsp.SerializeToString(), seq)

    def check_send(self, conn: RoomConnection, req: ext_pb2.RoomSendReq, now: float) -> None:
        """Refuse a RoomSendReq the gate can already tell is refused (module docstring)."""
        _check_user(conn, req.from_user_id)
        member = self._rooms.get(req.room_id, {}).get(conn.conn_id)
        if member is None or member.after < 0:
            raise Refused(ExtResultCode.FORBIDDEN, f"not in room {req.room_id}: join it first")
        bucket = self._buckets.get(conn.user_id)
        if bucket is None:
            s = self._settings
            bucket = self._buckets[conn.user_id] = TokenBucket(
                rate=s.user_rate_per_s, burst=s.user_rate_burst, now=now
            )
        if not bucket.take(now):
            raise Refused(ExtResultCode.RATE_LIMITED, "too many room messages: slow down")

    # -- downlink ------------------------------------------------------------------------------

    def deliver(self, record: RoomDeliver, touched: dict[int, RoomConnection]) -> None:
        """Write every item of `record` to each member of its room, one write per member;
        `touched` collects the connections to `pump` afterwards (slow members' exits).

        The loop is the gate's per-member work, so it does little: the bodies are framed
        once (`SharedPush`: a member only adds its push seq), and only a member that joined
        amid these messages, or sent one of them, gets its own list. The gate merges a
        batch's records of one room before calling this (`Gate._on_records`), so a member
        gets one write per batch however many records it held."""
        members = self._rooms.get(record.room_id)
        if not members:
            return
        limit = self._settings.slow_backlog_frames
        items = record.items
        cmd = Cmd.ROOM_MSG
        pushes = [SharedPush(cmd, item.body) for item in items]
        first = items[0].msg_id if items else 0
        senders = {item.skip_conn for item in items if item.skip_conn}
        slow: list[int] = []
        count = 0
        for conn_id, member in members.items():
            after = member.after
            if after < 0:
                if member.held is None:
                    member.held = []
                member.held.extend(items)
                continue
            conn = member.conn
            if conn.backlog > limit:
                slow.append(conn_id)
                continue
            if after < first and conn_id not in senders:
                mine: Sequence[SharedPush] = pushes
            else:
                mine = [
                    push
                    for push, i in zip(pushes, items, strict=True)
                    if i.msg_id > after and i.skip_conn != conn_id
                ]
            if mine:
                conn.push(cmd, mine)
                count += len(mine)
        for conn_id in slow:
            self._drop_slow(record.room_id, conn_id, touched)
        self.deliveries += count
        ROOM_DELIVERIES.inc(count)

    def close_room(self, record: RoomClose, touched: dict[int, RoomConnection]) -> None:
        """Every member of the room gets RoomExitNotify (CLOSED) and leaves it."""
        members = self._rooms.pop(record.room_id, None)
        if not members:
            return
        body = ext_pb2.RoomExitNotify(
            room_id=record.room_id,
            reason=ext_pb2.RoomExitReason.ValueType(RoomExitReason.CLOSED),
            text=record.text,
        ).SerializeToString()
        for conn_id, member in members.items():
            rooms = self._by_conn.get(conn_id)
            if rooms is not None:
                rooms.discard(record.room_id)
            member.conn.queue(Cmd.ROOM_EXIT_NOTIFY, body)
            touched[conn_id] = member.conn
        log.info(
            "gate %s: room %d closed, %d member(s) left it",
            self.gate_id,
            record.room_id,
            len(members),
            extra={"trace_id": record.trace_id},
        )

    def connection_closed(self, conn_id: int, user_id: int, user_gone: bool) -> None:
        """The connection is gone: it leaves its rooms (the store's counts in background)."""
        if user_gone:
            self._buckets.pop(user_id, None)
        for room_id in self._by_conn.pop(conn_id, ()):
            member = self._forget(room_id, conn_id, keep_conn=True)
            if member is not None and member.after >= 0:
                self._spawn(self._leave_quietly(room_id), f"room-leave-{conn_id}-{room_id}")

    # -- presence ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Forget what a previous process of this gate id counted (its connections are gone)."""
        await self._store.forget_gate(self.gate_id)

    async def stop(self) -> None:
        """The gate drained: its presence in every room goes (its connections are closed)."""
        self._rooms.clear()
        self._by_conn.clear()
        await self._store.forget_gate(self.gate_id)

    async def check_presence(self) -> None:
        """Re-assert this gate's count in each of its rooms; close the rooms found closed."""
        for room_id in list(self._rooms):
            members = self._rooms.get(room_id)
            if not members:
                continue
            joined = sum(1 for m in members.values() if m.after >= 0)
            try:
                still_open = await self._store.ensure(room_id, self.gate_id, max(joined, 1))
            except Exception as exc:
                log.warning("gate %s: presence of room %d: %r", self.gate_id, room_id, exc)
                continue
            if not still_open:
                touched: dict[int, RoomConnection] = {}
                self.close_room(
                    RoomClose(room_id=room_id, text="room closed", trace_id=TraceId(""), ts_ms=0),
                    touched,
                )
                for conn in touched.values():
                    conn.pump()

    # -- internals -----------------------------------------------------------------------------

    def _forget(self, room_id: int, conn_id: int, *, keep_conn: bool = False) -> _Member | None:
        members = self._rooms.get(room_id)
        member = members.pop(conn_id, None) if members is not None else None
        if members is not None and not members:
            del self._rooms[room_id]
        if not keep_conn:
            rooms = self._by_conn.get(conn_id)
            if rooms is not None:
                rooms.discard(room_id)
                if not rooms:
                    del self._by_conn[conn_id]
        return member

    def _drop_slow(self, room_id: int, conn_id: int, touched: dict[int, RoomConnection]) -> None:
        member = self._forget(room_id, conn_id)
        if member is None:
            return
        self.dropped_slow += 1
        ROOM_DROPPED_SLOW.inc()
        notify = ext_pb2.RoomExitNotify(
            room_id=room_id,
            reason=ext_pb2.RoomExitReason.ValueType(RoomExitReason.TOO_SLOW),
            text="not reading room messages fast enough",
        )
        member.conn.queue(Cmd.ROOM_EXIT_NOTIFY, notify.SerializeToString())
        touched[conn_id] = member.conn
        log.info("gate %s: conn %d dropped from room %d (too slow)", self.gate_id, conn_id, room_id)
        self._spawn(self._leave_quietly(room_id), f"room-leave-{conn_id}-{room_id}")

    async def _leave_quietly(self, room_id: int) -> None:
        try:
            await self._store.leave(room_id, self.gate_id)
        except Exception as exc:
            # The count stays one too high until this gate id restarts (`start`).
            log.warning(
                "gate %s: could not count a leave of room %d: %r", self.gate_id, room_id, exc
            )


def _check_user(conn: RoomConnection, body_user_id: int) -> None:
    if body_user_id not in (0, conn.user_id):
        log.warning(
            "conn %d: user %d sent a room request claiming to be user %d",
            conn.conn_id,
            conn.user_id,
            body_user_id,
        )
        raise Refused(ExtResultCode.FORBIDDEN, "user_id is not the logged-in user")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field_bytes(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (an embedded message) holding `data`."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data
