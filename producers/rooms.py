"""Chat room endpoints: create, list, inspect and close rooms (docs/api.md, "Chat rooms").

Rooms belong to the business: clients join, leave and talk in them over the protocol
(docs/protocol-extensions.md, "Chat rooms"), but only the server API makes or ends one.
The room store (`store.rooms`) is written directly — a room is no timeline and has no single
writer to go through:

- **create** allocates the id, stores the open room with its settings (fixed for its life:
  the room group caches them) and emits ``room.created``;
- **close** marks the room closed and drops its window and presence, then tells every live
  gate (`RoomClose` on its topic, keyed by room: after the room's deliveries) — each gives
  its members a RoomExitNotify (CLOSED) — and emits ``room.closed``. A gate that misses the
  record finds the room closed at its next presence check. Closing a closed room is a 200
  that does nothing more.
"""

from __future__ import annotations

import logging
from typing import Annotated, Final

from litestar import Response, delete, get, post
from litestar.params import JSONBody, Parameter

from bus.base import Outgoing
from producers.deps import Pipeline, PipelineDep, StoresDep
from producers.models import RoomBody, RoomList, RoomPost, RoomView
from producers.problems import PROBLEMS, ApiProblem
from producers.users import parse_id
from schemas.bizevents import RoomClosed, RoomCreated, event_id
from schemas.codes import RoomPostPolicy
from schemas.envelope import RoomClose, encode_gate_record, now_ms
from schemas.ids import GateId, new_trace_id
from store.rooms import Room, RoomStore

__all__ = ["close_room", "create_room", "get_room", "list_rooms"]

logger = logging.getLogger(__name__)

RoomIdPath = Annotated[str, Parameter(description="room id, a decimal integer")]

_POLICIES: Final[dict[RoomPost, RoomPostPolicy]] = {
    "everyone": RoomPostPolicy.EVERYONE,
    "listed": RoomPostPolicy.LISTED,
    "nobody": RoomPostPolicy.NOBODY,
}
_NAMES: Final = {v: k for k, v in _POLICIES.items()}


def _store(pipeline: Pipeline) -> RoomStore:
    if pipeline.rooms is None:  # create_app serves these endpoints only with a room store
        raise ApiProblem(503, "not-ready", "chat rooms are not configured")
    return pipeline.rooms


def _view(room: Room, member_count: int, gates: dict[GateId, int] | None = None) -> RoomView:
    return RoomView(
        room_id=room.room_id,
        name=room.name,
        post=_NAMES.get(RoomPostPolicy(room.post_policy), "everyone"),
        posters=list(room.posters),
        slow_mode_s=room.slow_mode_s,
        max_msg_bytes=room.max_msg_bytes,
        history=room.history,
        created_ms=room.created_ms,
        closed_ms=room.closed_ms,
        open=room.open,
        member_count=member_count,
        gates=None if gates is None else {str(g): n for g, n in gates.items()},
    )


@post(
    "/v1/rooms",
    summary="Create a chat room",
    description=(
        "Creates an open room with these settings (fixed for its life) and emits "
        "`room.created`. Clients join it with RoomJoinReq (0x0812) by its `room_id`."
    ),
    tags=["rooms"],
    responses=PROBLEMS,
    status_code=201,
)
async def create_room(data: JSONBody[RoomBody], pipeline: PipelineDep) -> Response[RoomView]:
    """``POST /v1/rooms``."""
    store = _store(pipeline)
    limits = pipeline.room_settings
    if data.posters and data.post != "listed":
        raise ApiProblem(400, "invalid-room", "posters are only for post = listed")
    if data.post == "listed" and not data.posters:
        raise ApiProblem(400, "invalid-room", "post = listed needs at least one poster")
    history = limits.history_default if data.history is None else data.history
    if history > limits.history_max:
        raise ApiProblem(
            400, "invalid-room", f"history {history} is above the limit of {limits.history_max}"
        )
    room = Room(
        room_id=await store.allocate_id(),
        name=data.name,
        post_policy=_POLICIES[data.post],
        posters=tuple(dict.fromkeys(data.posters)),
        slow_mode_s=data.slow_mode_s,
        max_msg_bytes=data.max_msg_bytes or limits.max_msg_bytes_default,
        history=history,
        created_ms=now_ms(),
    )
    await store.create(room)
    await pipeline.publish_event(
        RoomCreated(
            id=event_id(RoomCreated, room.room_id),
            ts=room.created_ms,
            room_id=room.room_id,
            name=room.name,
        ),
    )
    logger.info("room %d (%s) created", room.room_id, room.name)
    return Response(
        _view(room, 0), status_code=201, headers={"Location": f"/v1/rooms/{room.room_id}"}
    )


@get(
    "/v1/rooms",
    summary="List open chat rooms",
    description="Open rooms by id, with their member counts; page with `after`.",
    tags=["rooms"],
    responses=PROBLEMS,
)
async def list_rooms(
    pipeline: PipelineDep,
    after: Annotated[int, Parameter(ge=0, description="list rooms with a larger id")] = 0,
    limit: Annotated[int, Parameter(ge=1, le=500, description="rooms per page")] = 100,
) -> RoomList:
    """``GET /v1/rooms``."""
    store = _store(pipeline)
    rooms = await store.list_open(after=after, limit=limit)
    views = [_view(room, await store.member_count(room.room_id)) for room in rooms]
    return RoomList(rooms=views, next_after=rooms[-1].room_id if len(rooms) == limit else None)


async def _room(store: RoomStore, raw: str) -> Room:
    room_id = parse_id(raw, "room id")
    room = await store.get(room_id)
    if room is None:
        raise ApiProblem(404, "unknown-room", f"no room {room_id}")
    return room


@get(
    "/v1/rooms/{room_id:str}",
    summary="Inspect a chat room",
    description=(
        "The room, its member count and how many members each live gate holds. A closed room "
        "is shown (`open` false) for `[rooms] closed_keep_s` after it closed, then 404."
    ),
    tags=["rooms"],
    responses=PROBLEMS,
)
async def get_room(room_id: RoomIdPath, pipeline: PipelineDep) -> RoomView:
    """``GET /v1/rooms/{room_id}``."""
    store = _store(pipeline)
    room = await _room(store, room_id)
    gates = await store.gates(room.room_id) if room.open else {}
    return _view(room, sum(gates.values()), gates)


@delete(
    "/v1/rooms/{room_id:str}",
    summary="Close a chat room",
    description=(
        "Closes the room: its recent messages are dropped, every member gets a "
        "RoomExitNotify (CLOSED) within a second and leaves it, `room.closed` is emitted. "
        "Closing a closed room does nothing more."
    ),
    tags=["rooms"],
    responses=PROBLEMS,
    status_code=200,
)
async def close_room(room_id: RoomIdPath, pipeline: PipelineDep, stores: StoresDep) -> RoomView:
    """``DELETE /v1/rooms/{room_id}``."""
    store = _store(pipeline)
    room = await _room(store, room_id)
    closed_ms = now_ms()
    had = await store.close(
        room.room_id, closed_ms=closed_ms, keep_s=pipeline.room_settings.closed_keep_s
    )
    if had is None:
        raise ApiProblem(404, "unknown-room", f"no room {room.room_id}")
    if not room.open or (closed := await store.get(room.room_id)) is None:
        return _view(room, 0)
    trace = new_trace_id()
    record = encode_gate_record(
        RoomClose(room_id=room.room_id, text="room closed", trace_id=trace, ts_ms=closed_ms)
    )
    # Every live gate, not only those the store counted: a gate that has no member of the
    # room ignores the record, and one whose join raced the close is told too.
    gates = sorted({info.gate_id for info in await stores.routes.live_gates()})
    key = b"room:%d" % room.room_id
    await pipeline.bus.publish_batch(
        [Outgoing(pipeline.topology.gate_topic(GateId(g)).name, record, key=key) for g in gates]
    )
    await pipeline.publish_event(
        RoomClosed(
            id=event_id(RoomClosed, room.room_id),
            ts=closed_ms,
            trace_id=trace,
            room_id=room.room_id,
            gates_notified=len(had),
        ),
    )
    logger.info("room %d closed; %d gate(s) had members, trace %s", room.room_id, len(had), trace)
    return _view(closed, 0)
