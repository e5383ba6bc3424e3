"""What a consumer group is built from: the `Runtime` protocol.

A group's factory (`consumers.registry.consumer_group`) takes the process's runtime and picks
the bus, the stores and the settings sections it needs. This protocol names exactly those, so
the consumers depend on nothing above them: the composition root's runtime
(`coffeebus.wiring.Runtime`, embedded or on the real services) satisfies it structurally, and
so does anything a test builds with the same attributes. Members are read-only properties: a
frozen dataclass or struct satisfies them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bus.base import Bus
    from bus.topology import Topology
    from consumers.projection import ProjectionTargets
    from consumers.settings import BizSettings, CallSettings, PushSettings, WebhookSettings
    from schemas.settings import MessagingSettings, RoomSettings
    from store.calls import CallStore
    from store.deliveries import DeliveryStore
    from store.groups import GroupLimits, GroupStore
    from store.inbox import InboxStore
    from store.messages import MessageStore
    from store.push_log import PushLog
    from store.push_tokens import PushTokenStore
    from store.rooms import RoomStore
    from store.routes import RouteStore
    from store.seq import SectionStore
    from store.sessions import SessionStore
    from store.timelines import UserTimelines
    from store.users import UserStore

__all__ = ["ConsumerSettings", "Runtime"]


class ConsumerSettings(Protocol):
    """The settings sections consumer groups read."""

    @property
    def messaging(self) -> MessagingSettings: ...
    @property
    def biz(self) -> BizSettings: ...
    @property
    def push(self) -> PushSettings: ...
    @property
    def webhooks(self) -> WebhookSettings: ...
    @property
    def calls(self) -> CallSettings: ...
    @property
    def rooms(self) -> RoomSettings: ...


class Runtime(Protocol):
    """The bus, topology, stores and settings of one process, as the groups see them."""

    @property
    def settings(self) -> ConsumerSettings: ...
    @property
    def bus(self) -> Bus: ...
    @property
    def topology(self) -> Topology: ...
    @property
    def users(self) -> UserStore: ...
    @property
    def routes(self) -> RouteStore: ...
    @property
    def messages(self) -> MessageStore:
        """Conversation timelines (the msg group is their single writer)."""

    @property
    def inbox(self) -> InboxStore:
        """Users' inbox timelines (the fanout group is their single writer)."""

    @property
    def sessions(self) -> SessionStore: ...
    @property
    def deliveries(self) -> DeliveryStore:
        """Per user and conversation, the highest seq a device acked (the ack group writes)."""

    @property
    def groups(self) -> GroupStore: ...
    @property
    def calls(self) -> CallStore:
        """Calls, their parties' claims and deadlines (the call group)."""

    @property
    def group_limits(self) -> GroupLimits:
        """Member limits by group type, from ``[messaging]``."""

    @property
    def sections(self) -> SectionStore:
        """Persisted seq sections; each group makes its own `store.seq.SeqAllocator` over it."""

    @property
    def push_tokens(self) -> PushTokenStore: ...
    @property
    def push_log(self) -> PushLog: ...
    @property
    def rooms(self) -> RoomStore:
        """Chat rooms: settings, recent windows, presence per gate (the room group)."""

    @property
    def timelines(self) -> UserTimelines:
        """What the fanout group writes inbox entries and session touches through."""

    @property
    def projection(self) -> ProjectionTargets:
        """What the projection group writes (the document store) and trims (the hot state)."""
