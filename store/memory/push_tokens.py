"""`PushTokenStore` in memory (embedded mode and tests)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from schemas.ids import UserId
from store.clock import Clock, SystemClock
from store.push_tokens import (
    PushDevice,
    PushProvider,
    device_key,
    devices_by_user,
    newest_devices,
)


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
        return newest_devices(d for d in self._devices.values() if d.user_id == user_id)

    async def devices_of(self, user_ids: Iterable[UserId]) -> dict[UserId, list[PushDevice]]:
        """Devices of many users."""
        wanted = set(user_ids)
        return devices_by_user(d for d in self._devices.values() if d.user_id in wanted)

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
