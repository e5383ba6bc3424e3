"""The ``room`` group: chat room messages on ``im.up.room`` (key: room id).

Read diffusion (docs/architecture.md, "Chat rooms"): nothing is written per member. Per
batch (one partition, so each room's sends in the order its members sent them), room by
room:

1. **check** each RoomSendReq: the sender is the connection's user (`acting_user`), a
   ``client_msg_id`` of 1-64 characters, the room is open, the sender may post
   (`store.rooms.can_post`), ``msg_data`` within the room's ``max_msg_bytes``, and the
   room's rate (`[rooms] room_rate_per_s`, a token bucket per room held by the owner of its
   partition, so one busy room cannot take the group from the others);
2. **claim** msg ids in the store, which also applies slow mode (one message per user every
   ``slow_mode_s``: refused RATE_LIMITED with the time left);
3. **keep** the RoomMsg bodies — encoded once here — in the room's recent window and read
   which gates have members, in one step (`RoomStore.append`);
4. **deliver** one `RoomDeliver` per such gate, keyed by room id, holding every message of
   the batch for that room (cut at `RECORD_BUDGET` bytes); answer each sender RoomSendRsp
   (a refusal ErrorRsp); publish one ``room.message`` event per message.

A room's settings never change after creation, so they are cached here; whether it is still
open is asked of the store with every claim. A replayed batch claims new msg ids and
delivers again: room messages are at-most-once-stored, at-least-once-delivered, and a
client that resends after a lost RoomSendRsp may say the same thing twice — a room is not a
log of record (its business record is the ``room.message`` event).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from bus.base import Bus, Record, Reject, TopicPartition
from bus.topology import Topology
from consumers.effects import Effects
from consumers.registry import consumer_group
from consumers.requests import Refusal, Request, acting_user, decode_request
from gateway.ratelimit import TokenBucket
from schemas.bizevents import BizTopic, RoomMessage, encode_event, event_id
from schemas.codes import ExtResultCode
from schemas.commands import Cmd
from schemas.envelope import Origin, RoomDeliver, RoomItem, now_ms
from schemas.ids import ConnId, UserId
from schemas.pb.coffeebus import ext_pb2
from schemas.settings import RoomSettings
from store.rooms import Room, RoomStore, can_post

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["RECORD_BUDGET", "RoomHandler", "build"]

log = logging.getLogger(__name__)

MAX_CLIENT_MSG_ID: Final = 64
#: message bytes per RoomDeliver record (Kafka's default record limit is 1 MiB)
RECORD_BUDGET: Final = 512 * 1024
#: rooms whose settings are cached
_CACHE_ROOMS: Final = 10_000


class _Send:
    """One accepted send on its way."""

    __slots__ = ("msg", "msg_id", "origin", "request", "sender")

    def __init__(
        self, request: Request, msg: ext_pb2.RoomSendReq, origin: Origin, sender: UserId
    ) -> None:
        self.request = request
        self.msg = msg
        self.origin = origin
        self.sender = sender
        self.msg_id = 0


class RoomHandler:
    """Checks, sequences, keeps and delivers room messages (module docstring)."""

    def __init__(
        self,
        *,
        bus: Bus,
        topology: Topology,
        rooms: RoomStore,
        settings: RoomSettings | None = None,
        include_msg_data: bool = True,
    ) -> None:
        self._bus = bus
        self._topology = topology
        self._rooms = rooms
        self._settings = settings or RoomSettings()
        self._include_msg_data = include_msg_data
        self._events_topic = topology.topic(BizTopic.ROOMS).name
        self._cache: dict[int, Room] = {}
        self._buckets: dict[int, TokenBucket] = {}
        #: messages delivered and gate records published since start (logs, tests)
        self.messages = 0
        self.gate_records = 0

    async def handle(self, records: Sequence[Record]) -> None:
        """Handle one partition's batch (module docstring)."""
        effects = Effects(self._topology)
        by_room: dict[int, list[tuple[Request, ext_pb2.RoomSendReq, Origin]]] = {}
        for record in records:
            request = decode_request(record)
            msg, origin = request.message, request.origin
            if not isinstance(msg, ext_pb2.RoomSendReq) or origin is None:
                raise Reject(
                    f"im.up.room carries clients' RoomSendReq only, not {request.cmd:#06x}"
                )
            by_room.setdefault(msg.room_id, []).append((request, msg, origin))
        for room_id, sends in by_room.items():
            await self._room(room_id, sends, effects)
        if len(effects):
            await effects.flush(self._bus)

    async def _room(
        self,
        room_id: int,
        sends: list[tuple[Request, ext_pb2.RoomSendReq, Origin]],
        effects: Effects,
    ) -> None:
        room = await self._room_of(room_id)
        accepted: list[_Send] = []
        now = time.monotonic()
        for request, msg, origin in sends:
            try:
                sender = acting_user(origin, msg.from_user_id, request.cmd)
                self._check(room, room_id, msg, sender, now)
            except Refusal as refusal:
                self._refuse(effects, request, origin, refusal)
                continue
            accepted.append(_Send(request, msg, origin, sender))
        if not accepted:
            return
        assert room is not None
        claimed = await self._rooms.claim(
            room_id, [s.sender for s in accepted], slow_mode_s=room.slow_mode_s
        )
        if claimed is None:
            self._closed(room_id, accepted, effects)
            return
        kept: list[_Send] = []
        for send, msg_id in zip(accepted, claimed, strict=True):
            if msg_id > 0:
                send.msg_id = msg_id
                kept.append(send)
                continue
            wait = math.ceil(-msg_id / 1000)
            slow = Refusal(ExtResultCode.RATE_LIMITED, f"slow mode: retry in {wait} s")
            self._refuse(effects, send.request, send.origin, slow)
        if not kept:
            return
        created = now_ms()
        bodies = [
            ext_pb2.RoomMsg(
                room_id=room_id,
                msg_id=s.msg_id,
                from_user_id=s.sender,
                client_msg_id=s.msg.client_msg_id,
                msg_type=s.msg.msg_type,
                msg_data=s.msg.msg_data,
                create_time_ms=created,
            ).SerializeToString()
            for s in kept
        ]
        gates = await self._rooms.append(
            room_id, [(s.msg_id, b) for s, b in zip(kept, bodies, strict=True)], window=room.history
        )
        if gates is None:
            self._closed(room_id, kept, effects)
            return
        trace = kept[0].request.envelope.trace_id
        key = b"room:%d" % room_id
        for gate_id in gates:
            items = [
                RoomItem(
                    msg_id=s.msg_id,
                    body=body,
                    skip_conn=s.origin.conn_id if s.origin.gate_id == gate_id else ConnId(0),
                    sent_ms=s.request.envelope.ts_ms,
                )
                for s, body in zip(kept, bodies, strict=True)
            ]
            for chunk in _chunks(items):
                record = RoomDeliver(room_id=room_id, items=chunk, trace_id=trace, ts_ms=created)
                effects.to_gate(gate_id, record, key=key)
                self.gate_records += 1
        for send in kept:
            envelope = send.request.envelope
            rsp = ext_pb2.RoomSendRsp(
                room_id=room_id,
                client_msg_id=send.msg.client_msg_id,
                msg_id=send.msg_id,
                create_time_ms=created,
            )
            effects.reply(send.origin, Cmd.ROOM_SEND_RSP, rsp, envelope.trace_id)
            event = RoomMessage(
                id=event_id(RoomMessage, room_id, send.msg_id),
                ts=created,
                trace_id=envelope.trace_id,
                room_id=room_id,
                msg_id=send.msg_id,
                from_user_id=send.sender,
                client_msg_id=send.msg.client_msg_id,
                msg_type=int(send.msg.msg_type),
                msg_data=send.msg.msg_data if self._include_msg_data else None,
            )
            effects.publish(self._events_topic, encode_event(event), key=event.key())
        self.messages += len(kept)

    def _check(
        self, room: Room | None, room_id: int, msg: ext_pb2.RoomSendReq, sender: int, now: float
    ) -> None:
        if not 0 < len(msg.client_msg_id) <= MAX_CLIENT_MSG_ID:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER,
                f"client_msg_id must be 1-{MAX_CLIENT_MSG_ID} characters",
            )
        if room is None:
            raise Refusal(ExtResultCode.NOT_FOUND, f"no open room {room_id}")
        if not can_post(room, sender):
            raise Refusal(ExtResultCode.FORBIDDEN, f"user {sender} may not post in room {room_id}")
        if len(msg.msg_data) > room.max_msg_bytes:
            raise Refusal(
                ExtResultCode.TOO_LARGE,
                f"msg_data is {len(msg.msg_data)} bytes; room {room_id} takes at most "
                f"{room.max_msg_bytes}",
            )
        bucket = self._buckets.get(room_id)
        if bucket is None:
            s = self._settings
            bucket = self._buckets[room_id] = TokenBucket(
                rate=s.room_rate_per_s, burst=s.room_rate_burst, now=now
            )
        if not bucket.take(now):
            raise Refusal(ExtResultCode.RATE_LIMITED, f"room {room_id} is busy: retry later")

    async def _room_of(self, room_id: int) -> Room | None:
        """The open room's settings (cached: they never change), or None."""
        room = self._cache.get(room_id)
        if room is not None:
            return room
        room = await self._rooms.get(room_id) if room_id > 0 else None
        if room is None or not room.open:
            return None
        if len(self._cache) >= _CACHE_ROOMS:
            self._cache.clear()
        self._cache[room_id] = room
        return room

    def _closed(self, room_id: int, sends: Sequence[_Send], effects: Effects) -> None:
        self._cache.pop(room_id, None)
        self._buckets.pop(room_id, None)
        refusal = Refusal(ExtResultCode.NOT_FOUND, f"no open room {room_id}")
        for send in sends:
            self._refuse(effects, send.request, send.origin, refusal)

    @staticmethod
    def _refuse(effects: Effects, request: Request, origin: Origin, refusal: Refusal) -> None:
        log.debug("room send of user %d refused: %s", origin.user_id, refusal.text)
        effects.error(origin, request.cmd, refusal.code, refusal.text, request.envelope.trace_id)

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Room rates start afresh with a partition's new owner."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Forget the rates of rooms another member now owns (cheap to rebuild)."""
        self._buckets.clear()

    async def close(self) -> None:
        """Nothing is buffered."""


def _chunks(items: list[RoomItem]) -> list[tuple[RoomItem, ...]]:
    """`items` cut into runs of at most `RECORD_BUDGET` body bytes (at least one item each)."""
    out: list[tuple[RoomItem, ...]] = []
    run: list[RoomItem] = []
    size = 0
    for item in items:
        if run and size + len(item.body) > RECORD_BUDGET:
            out.append(tuple(run))
            run, size = [], 0
        run.append(item)
        size += len(item.body)
    if run:
        out.append(tuple(run))
    return out


@consumer_group("room")
def build(runtime: Runtime) -> RoomHandler:
    """The room group on the runtime's bus and room store."""
    return RoomHandler(
        bus=runtime.bus,
        topology=runtime.topology,
        rooms=runtime.rooms,
        settings=runtime.settings.rooms,
        include_msg_data=runtime.settings.biz.include_msg_data,
    )
