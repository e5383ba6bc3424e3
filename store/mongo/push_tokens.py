"""`PushTokenStore` on MongoDB ``push_tokens``.

Documents: ``{_id: "<provider>:<token>", user, provider, token, app, ct, ms}`` (`ms`:
registration time), index ``(user)`` for the per-user lists. Written by the API (register,
remove) and the push group (discard) — every write is one single-document operation by
``_id``, and a lost race between them is harmless (a token registered twice is the same
registration; a dead token registered again is read again and discarded again). Intended to
stay unsharded (a small document per device); sharded, the key would be ``_id`` and
`devices_of` a scatter-gather query on the ``user`` index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from schemas.ids import UserId
from store.clock import Clock, SystemClock
from store.mongo.client import Document
from store.mongo.collections import Collection
from store.push_tokens import PushDevice, PushProvider, device_key, devices_by_user

PUSH_TOKENS_COLLECTION: Final = Collection.PUSH_TOKENS


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
        return devices_by_user([_from_doc(doc) async for doc in cursor])

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
