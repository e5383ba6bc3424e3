"""Fixtures of the API tests: the stores (in-memory twins, or MongoDB + Redis isolated per
test) and an in-process client of the application built on them.

The real stores get their own MongoDB database and Redis key namespace per test, both
removed afterwards, so the tests can share servers with anything else.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import msgspec
import pytest
from litestar import Litestar
from playwright.async_api import Browser

from coffeebus.settings import ApiSettings
from producers.app import create_app
from store.memory.routes import MemoryRouteStore
from store.memory.users import MemoryUserStore
from store.mongo.client import connect_mongo, ensure_indexes
from store.mongo.users import MongoUserStore
from store.passwords import ScryptParams
from store.redis.client import connect_redis
from store.redis.keys import RedisKeys
from store.redis.routes import RedisRouteStore
from store.routes import RouteStore
from store.users import UserStore

Client = httpx.AsyncClient

#: Cheap scrypt so password imports do not dominate test time (never in production).
CHEAP_SCRYPT = ScryptParams(n=2**4, r=1, p=1)


class Stores(msgspec.Struct, frozen=True):
    """The stores an app under test runs on."""

    kind: str
    users: UserStore
    routes: RouteStore


@contextlib.asynccontextmanager
async def in_process_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling `app` in this event loop.

    Not Litestar's test client: that one serves the app from a portal on another event
    loop, where the MongoDB and Redis clients created by the fixtures cannot be used. The
    app has no lifespan hooks, so none are run (`test_serve_api_answers_over_http` covers
    the full server).
    """
    transport = httpx.ASGITransport(app=cast(Any, app))  # httpx types a narrower ASGI app
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def _memory() -> AsyncIterator[Stores]:
    yield Stores("memory", MemoryUserStore(password_params=CHEAP_SCRYPT), MemoryRouteStore())


async def _real(mongo_url: str, redis_url: str) -> AsyncIterator[Stores]:
    redis = connect_redis(redis_url)
    mongo = connect_mongo(mongo_url)
    keys = RedisKeys(namespace=f"cbtest:{uuid.uuid4().hex[:12]}:")
    db_name = f"cbtest_api_{uuid.uuid4().hex[:12]}"
    db = mongo[db_name]
    try:
        await ensure_indexes(db)
        yield Stores(
            "real",
            MongoUserStore(db, redis, keys=keys, password_params=CHEAP_SCRYPT),
            RedisRouteStore(redis, keys=keys),
        )
    finally:
        leftovers = [key async for key in redis.scan_iter(match=keys.pattern(), count=1000)]
        if leftovers:
            await redis.delete(*leftovers)
        await mongo.drop_database(db_name)
        await redis.aclose()
        await mongo.close()


@pytest.fixture
async def memory_stores() -> AsyncIterator[Stores]:
    """In-memory stores."""
    async for stores in _memory():
        yield stores


@pytest.fixture(
    params=[
        "memory",
        pytest.param("real", marks=[pytest.mark.mongo, pytest.mark.redis]),
    ]
)
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    """Each store implementation: the in-memory twins, then MongoDB + Redis."""
    if request.param == "memory":
        source = _memory()
    else:
        source = _real(request.getfixturevalue("mongo_url"), request.getfixturevalue("redis_url"))
    async for value in source:
        yield value


@pytest.fixture
async def api(stores: Stores) -> AsyncIterator[Client]:
    """A client of the unauthenticated app (loopback mode) on `stores`."""
    async with in_process_client(create_app(ApiSettings(), stores.users, stores.routes)) as client:
        yield client


@pytest.fixture
async def memory_api(memory_stores: Stores) -> AsyncIterator[Client]:
    """A client of the unauthenticated app on in-memory stores."""
    app = create_app(ApiSettings(), memory_stores.users, memory_stores.routes)
    async with in_process_client(app) as client:
        yield client


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless (tests/producers/browser.py)."""
    from tests.producers.browser import launch_browser  # noqa: PLC0415

    async for launched in launch_browser():
        yield launched
