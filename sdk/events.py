"""What `Client.events()` yields: server pushes and changes of the connection."""

from __future__ import annotations

import msgspec

from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import login_pb2
from sdk.protocol import Push

__all__ = ["Disconnected", "Event", "Kicked", "Push", "Reconnected"]


class Kicked(msgspec.Struct, frozen=True, gc=False):
    """The server sent a KickNotify (0x0801) and is closing the connection.

    The client does not reconnect after a kick, except for SERVER_SHUTDOWN (the gate is
    draining: reconnecting, possibly to another gate, is what the server asks for).
    """

    notify: ext_pb2.KickNotify


class Disconnected(msgspec.Struct, frozen=True, gc=False):
    """The connection ended; `reconnecting` tells whether the client is trying again."""

    reason: str
    reconnecting: bool


class Reconnected(msgspec.Struct, frozen=True, gc=False):
    """The client connected and logged in again after a drop.

    Pushes sent while it was away are not replayed by the gate: catch up with
    `Client.sync` (or the session list and history).
    """

    attempts: int
    login: login_pb2.AuthTokenRsp | login_pb2.AuthRsp


Event = Push | Kicked | Disconnected | Reconnected
