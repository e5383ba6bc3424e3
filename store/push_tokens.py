"""Device push tokens: the model and the `PushTokenStore` protocol.

A device that wants offline pushes registers its provider token for its user (the HTTP API,
``POST /v1/users/{id}/push-tokens``); the ``push`` group reads a batch of users' devices in
one query and removes the tokens a provider reports as invalid.

A token names one app install on one device, so it belongs to one user at a time: the
document is keyed by (provider, token), and registering a token another user had moves it
(the device was logged in as someone else). A user has a handful of devices; `devices_of`
returns them newest first.

Removal comes in two kinds:

- `remove`: the user (through the API) unregisters a token — only if it is still theirs;
- `discard_invalid`: a provider said the token is dead. Only the registration the push group
  read is deleted (same user, registered no later): a device that registered the token again
  meanwhile keeps it.

Implementations: `store.memory.push_tokens.MemoryPushTokenStore`,
`store.mongo.push_tokens.MongoPushTokenStore`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Annotated, Final, Protocol

import msgspec

from schemas.ids import UserId

__all__ = [
    "MAX_DEVICES_PER_USER",
    "PushDevice",
    "PushProvider",
    "PushTokenStore",
    "device_key",
    "devices_by_user",
    "newest_devices",
]

#: Devices per user a push goes to (the newest registrations); older ones are ignored.
MAX_DEVICES_PER_USER: Final = 20

Token = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class PushProvider(enum.StrEnum):
    """Who delivers a device's pushes."""

    #: Apple Push Notification service (HTTP/2, token-based auth)
    APNS = "apns"
    #: Firebase Cloud Messaging (HTTP v1 API)
    FCM = "fcm"
    #: the business's own push service (``[push] webhook_url``), which knows its vendors
    WEBHOOK = "webhook"


class PushDevice(msgspec.Struct, frozen=True, kw_only=True):
    """One registered device of a user."""

    user_id: UserId
    provider: PushProvider
    #: the provider's device token (APNs: hex; FCM: registration token; webhook: any)
    token: Token
    #: APNs: the app's bundle id when it is not ``[push] apns_topic``; otherwise free-form
    app_id: Annotated[str, msgspec.Meta(max_length=256)] = ""
    #: the device's CoffeeChat client type (CLIENT_TYPE_IOS, ...), for the business's stats
    client_type: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: when it was registered (ms); set by the store
    registered_ms: int = 0

    @property
    def key(self) -> str:
        """The device's identity: its provider and token."""
        return device_key(self.provider, self.token)


def device_key(provider: PushProvider, token: str) -> str:
    """The ``_id`` of a registration."""
    return f"{provider.value}:{token}"


class PushTokenStore(Protocol):
    """Where device push tokens live."""

    async def register(self, device: PushDevice) -> PushDevice:
        """Register `device` for its user (moving the token from another user if need be);
        returns it with its registration time."""
        ...

    async def remove(self, user_id: UserId, provider: PushProvider, token: str) -> bool:
        """Unregister the token if `user_id` holds it; whether it did."""
        ...

    async def devices(self, user_id: UserId) -> list[PushDevice]:
        """The user's devices, newest first (at most `MAX_DEVICES_PER_USER`)."""
        ...

    async def devices_of(self, user_ids: Iterable[UserId]) -> dict[UserId, list[PushDevice]]:
        """The devices of many users in one query (users without any are left out)."""
        ...

    async def discard_invalid(self, device: PushDevice) -> bool:
        """A provider rejected `device`'s token for good: delete that registration unless it
        was renewed (or moved) since it was read; whether it did."""
        ...


def newest_devices(devices: Iterable[PushDevice]) -> list[PushDevice]:
    """`devices` newest first, at most `MAX_DEVICES_PER_USER`."""
    return sorted(devices, key=lambda d: (-d.registered_ms, d.key))[:MAX_DEVICES_PER_USER]


def devices_by_user(devices: Iterable[PushDevice]) -> dict[UserId, list[PushDevice]]:
    """`devices` grouped by user, each user's newest first (`newest_devices`)."""
    by_user: dict[UserId, list[PushDevice]] = {}
    for device in devices:
        by_user.setdefault(device.user_id, []).append(device)
    return {user: newest_devices(found) for user, found in by_user.items()}
