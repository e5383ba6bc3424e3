"""The server API on a test system's bus and stores, called in-process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from coffeebus.settings import ApiSettings
from producers.app import Pipeline, create_app
from tests.consumers.conftest import System
from tests.producers.conftest import Client, in_process_client


@contextlib.asynccontextmanager
async def system_api(system: System, *, group_create_wait_s: float = 20.0) -> AsyncIterator[Client]:
    """A client of the API app wired to `system` as `coffeebus.roles.ApiRole` wires it.

    `group_create_wait_s` is how long ``POST /v1/groups`` waits for the group consumer
    (the tests' generous default: a create answered 202 would fail them, not hang them).
    """
    runtime = system.runtime
    app = create_app(
        ApiSettings(),
        runtime.users,
        runtime.routes,
        pipeline=Pipeline(
            bus=runtime.bus,
            topology=runtime.topology,
            groups=runtime.groups,
            messages=runtime.messages,
            group_limits=runtime.group_limits,
            group_create_wait_s=group_create_wait_s,
            rooms=runtime.rooms,
            room_settings=runtime.settings.rooms,
        ),
        idempotency=runtime.idempotency,
    )
    async with in_process_client(app) as client:
        yield client
