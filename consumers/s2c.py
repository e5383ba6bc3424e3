"""Business pushes (s2c): the ``im.s2c`` records, handled by the ``fanout`` group.

The server API (``POST /v1/push``) publishes one record per recipient to ``im.s2c``, keyed by
the recipient's user id: an `schemas.envelope.Envelope` with ``origin=None`` whose command is
S2CPush (0x080B) and whose body is the `S2CPush` protobuf exactly as the device gets it
(``push_id``, ``to_user_id``, the business's ``msg_type`` / ``msg_data`` / ``content_type``
/ ``channel``, ``create_time``).

Per batch (one partition, in order): decode every record (garbage, another command or a
push without a recipient is poison: `Reject` → DLQ), look the recipients' routes up in one
``RouteStore.get_many``, and push each body to every online device of its recipient
(`consumers.effects.Effects.push`: one Deliver per gate partition). Nothing is stored: an
s2c push is online-only, so a recipient without a route gets nothing and the record is
done. (A push the business wants kept is a stored system message instead — see
docs/api.md, ``POST /v1/push`` with ``store: true``.)

A replayed record pushes again; devices dedupe by ``push_id``. Devices answer with
S2CPushAck (0x080C) on ``im.up.ack``, keyed by user, where the ack group turns it into a
receipt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bus.base import Bus, Record, Reject
from bus.topology import Topology
from consumers.effects import Effects
from consumers.requests import decode_request
from schemas.commands import Cmd
from schemas.ids import TraceId, UserId
from schemas.pb.coffeebus import ext_pb2
from store.routes import RouteStore

__all__ = ["S2C_TOPIC", "S2CHandler"]

log = logging.getLogger(__name__)

S2C_TOPIC = "im.s2c"


class S2CHandler:
    """Delivers batches of ``im.s2c`` records to the recipients' online devices."""

    def __init__(self, *, bus: Bus, topology: Topology, routes: RouteStore) -> None:
        self._bus = bus
        self._topology = topology
        self._routes = routes
        #: pushes handled and device frames addressed since start (for logs and tests)
        self.pushes = 0
        self.addressed = 0

    async def handle(self, records: Sequence[Record]) -> None:
        """Push every record's S2CPush to its recipient's devices (module docstring)."""
        pushes = [_decode(record) for record in records]
        routes = await self._routes.get_many({user for user, _, _ in pushes})
        effects = Effects(self._topology)
        addressed = 0
        for user, body, trace in pushes:
            addressed += effects.push(user, routes.get(user, ()), Cmd.S2C_PUSH, body, trace)
        if len(effects):
            await effects.flush(self._bus)
        self.pushes += len(pushes)
        self.addressed += addressed
        log.debug("s2c: %d push(es), %d device frame(s)", len(pushes), addressed)


def _decode(record: Record) -> tuple[UserId, bytes, TraceId]:
    """(recipient, S2CPush body, trace id) of one record; `Reject` for poison."""
    request = decode_request(record)
    if request.cmd != Cmd.S2C_PUSH:
        raise Reject(f"im.s2c carries S2CPush (0x080B) only, not 0x{request.cmd:04X}")
    push = request.message
    assert isinstance(push, ext_pb2.S2CPush)
    if push.to_user_id <= 0:
        raise Reject("S2CPush without to_user_id")
    return UserId(push.to_user_id), request.envelope.body, request.envelope.trace_id
