"""Device push tokens: the `PushTokenStore` protocol, its memory twin and MongoDB.

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

MongoDB ``push_tokens``: ``{_id: "<provider>:<token>", user, provider, token, app, ct, ms}``
(`ms`: registration time), index ``(user)`` for the per-user lists. Written by the API
(register, remove) and the push group (discard) — every write is one single-document
operation by ``_id``, and a lost race between them is harmless (a token registered twice is
the same registration; a dead token registered again is read again and discarded again).
Intended to stay unsharded (a small document per device); sharded, the key would be ``_id``
and `devices_of` a scatter-gather query on the ``user`` index.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Annotated, Final, Protocol

import msgspec
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from schemas.ids import UserId
from store.clock import Clock, SystemClock
from store.mongo.bulk import Document
from store.mongo.collections import Collection

__all__ = [
    "MAX_DEVICES_PER_USER",
    "PUSH_TOKENS_COLLECTION",
    "MemoryPushTokenStore",
    "MongoPushTokenStore",
    "PushDevice",
    "PushProvider",
    "PushTokenStore",
]

PUSH_TOKENS_COLLECTION: Final = Collection.PUSH_TOKENS

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


def _newest(devices: Iterable[PushDevice]) -> list[PushDevice]:
    return sorted(devices, key=lambda d: (-d.registered_ms, d.key))[:MAX_DEVICES_PER_USER]


def _group(devices: Iterable[PushDevice]) -> dict[UserId, list[PushDevice]]:
    by_user: dict[UserId, list[PushDevice]] = {}
    for device in devices:
        by_user.setdefault(device.user_id, []).append(device)
    return {user: _newest(found) for user, found in by_user.items()}


class MemoryPushTokenStore:
    """In-memory `PushTokenStore` (embedded mode and tests)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._devices: dict[str, PushDevice] = {}

    async def register(self, device: PushDevice) -> PushDevice:
        """Register (or move) the token."""
        stored = msgspec.structs.replace(device, registered_ms=self._clock.now_ms())
        self._devices[stored.key] = stored
        return stored

    async def remove(self, user_id: UserId, provider: PushProvider, token: str) -> bool:
        """Unregister the user's token."""
        key = device_key(provider, token)
        device = self._devices.get(key)
        if device is None or device.user_id != user_id:
            return False
        del self._devices[key]
        return True

    async def devices(self, user_id: UserId) -> list[PushDevice]:
        """The user's devices, newest first."""
        return _newest(d for d in self._devices.values() if d.user_id == user_id)

    async def devices_of(self, user_ids: Iterable[UserId]) -> dict[UserId, list[PushDevice]]:
        """Devices of many users."""
        wanted = set(user_ids)
        return _group(d for d in self._devices.values() if d.user_id in wanted)

    async def discard_invalid(self, device: PushDevice) -> bool:
        """Delete the registration that was read, unless renewed since."""
        current = self._devices.get(device.key)
        if (
            current is None
            or current.user_id != device.user_id
            or current.registered_ms > device.registered_ms
        ):
            return False
        del self._devices[device.key]
        return True


class MongoPushTokenStore:
    """`PushTokenStore` on MongoDB ``push_tokens`` (module docstring)."""

    def __init__(self, db: AsyncDatabase[Document], *, clock: Clock | None = None) -> None:
        self._coll: AsyncCollection[Document] = db[PUSH_TOKENS_COLLECTION]
        self._clock = clock or SystemClock()

    async def register(self, device: PushDevice) -> PushDevice:
        """One upsert by ``_id``: the token now belongs to `device.user_id`."""
        stored = msgspec.structs.replace(device, registered_ms=self._clock.now_ms())
        await self._coll.replace_one({"_id": stored.key}, _to_doc(stored), upsert=True)
        return stored

    async def remove(self, user_id: UserId, provider: PushProvider, token: str) -> bool:
        """Delete by ``_id`` if the user holds the token."""
        result = await self._coll.delete_one({"_id": device_key(provider, token), "user": user_id})
        return result.deleted_count == 1

    async def devices(self, user_id: UserId) -> list[PushDevice]:
        """The user's devices, newest first."""
        return (await self.devices_of((user_id,))).get(user_id, [])

    async def devices_of(self, user_ids: Iterable[UserId]) -> dict[UserId, list[PushDevice]]:
        """One ``$in`` query on the ``user`` index."""
        wanted = sorted(set(user_ids))
        if not wanted:
            return {}
        cursor = self._coll.find({"user": {"$in": wanted}})
        return _group([_from_doc(doc) async for doc in cursor])

    async def discard_invalid(self, device: PushDevice) -> bool:
        """Delete by ``_id`` the registration that was read (same user, not renewed)."""
        result = await self._coll.delete_one(
            {"_id": device.key, "user": device.user_id, "ms": {"$lte": device.registered_ms}}
        )
        return result.deleted_count == 1


def _to_doc(device: PushDevice) -> Document:
    return {
        "_id": device.key,
        "user": device.user_id,
        "provider": device.provider.value,
        "token": device.token,
        "app": device.app_id,
        "ct": device.client_type,
        "ms": device.registered_ms,
    }


def _from_doc(doc: Document) -> PushDevice:
    return PushDevice(
        user_id=UserId(int(doc["user"])),
        provider=PushProvider(doc["provider"]),
        token=str(doc["token"]),
        app_id=str(doc.get("app", "")),
        client_type=int(doc.get("ct", 0)),
        registered_ms=int(doc.get("ms", 0)),
    )
