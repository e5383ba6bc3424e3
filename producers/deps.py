"""The dependencies the handlers declare, provided by `producers.app.create_app`.

Handlers take one ``stores: Stores`` argument rather than one per store: the stores are
`typing.Protocol`s, which Litestar's signature model cannot check with ``isinstance``, while
this concrete holder it can. ``pipeline: Pipeline`` is what the messaging endpoints (push,
system messages, groups, revoke) publish to and read from.
"""

from __future__ import annotations

from litestar.di import NamedDependency

from bus.base import Bus, Outgoing
from bus.topology import Topology
from schemas.bizevents import BizEvent, encode_event
from schemas.settings import RoomSettings
from store.groups import GroupLimits, GroupStore
from store.messages import MessageStore
from store.push_tokens import PushTokenStore
from store.rooms import RoomStore
from store.routes import RouteStore
from store.users import UserStore

__all__ = ["Pipeline", "PipelineDep", "Stores", "StoresDep"]


class Stores:
    """The stores one application runs on."""

    __slots__ = ("push_tokens", "routes", "users")

    def __init__(
        self, users: UserStore, routes: RouteStore, push_tokens: PushTokenStore | None = None
    ) -> None:
        self.users = users
        self.routes = routes
        #: devices' offline-push tokens (the push-token endpoints exist when given)
        self.push_tokens = push_tokens


class Pipeline:
    """The bus the messaging endpoints publish to, and the stores they read (never write:
    every change goes through the consumer group owning it)."""

    __slots__ = (
        "bus",
        "group_create_wait_s",
        "group_limits",
        "groups",
        "max_msg_data_bytes",
        "messages",
        "room_settings",
        "rooms",
        "topology",
    )

    def __init__(
        self,
        *,
        bus: Bus,
        topology: Topology,
        groups: GroupStore,
        messages: MessageStore,
        max_msg_data_bytes: int = 64 * 1024,
        group_limits: GroupLimits | None = None,
        group_create_wait_s: float = 5.0,
        rooms: RoomStore | None = None,
        room_settings: RoomSettings | None = None,
    ) -> None:
        self.bus = bus
        self.topology = topology
        self.groups = groups
        self.messages = messages
        #: the msg group's limit (``[messaging]``): larger system messages are a 400 here
        #: rather than a dead-lettered record there
        self.max_msg_data_bytes = max_msg_data_bytes
        #: member limits by group type (``[messaging]``), checked before publishing
        self.group_limits = group_limits or GroupLimits()
        #: how long ``POST /v1/groups`` waits for the group consumer to create the group
        #: before answering 202 with its (final) id instead of 201
        self.group_create_wait_s = group_create_wait_s
        #: chat rooms (the room endpoints exist when given)
        self.rooms = rooms
        #: the ``[rooms]`` defaults and limits the room endpoints apply
        self.room_settings = room_settings or RoomSettings()

    async def publish_event(self, event: BizEvent) -> None:
        """Publish a business event on its ``biz.*`` topic, keyed as its type says."""
        topic = self.topology.topic(event.topic).name
        await self.bus.publish_batch([Outgoing(topic, encode_event(event), key=event.key())])


StoresDep = NamedDependency[Stores]
"""How a handler declares it: ``stores: StoresDep``."""

PipelineDep = NamedDependency[Pipeline]
"""How a messaging handler declares it: ``pipeline: PipelineDep``."""
