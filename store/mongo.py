"""MongoDB plumbing: client construction, index creation, readiness ping.

Uses PyMongo's native asyncio API (`pymongo.AsyncMongoClient`); Motor is deprecated.
Everything here works on FerretDB v1 as well as MongoDB: no transactions, sessions, change
streams or TTL/partial/sparse indexes are needed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from store.collections import INDEXES, Collection, IndexSpec

logger = logging.getLogger(__name__)

Document = dict[str, Any]
DEFAULT_DATABASE = "coffeebus"


def connect_mongo(
    url: str,
    *,
    app_name: str = "coffeebus",
    server_selection_timeout: float = 5.0,
    connect_timeout: float = 5.0,
    socket_timeout: float | None = 30.0,
) -> AsyncMongoClient[Document]:
    """A client for `url` with bounded timeouts (seconds), so an unreachable server fails a
    call within seconds instead of PyMongo's default 30 s selection wait, and a hung one
    does not hold a call forever. Connecting is lazy: nothing is sent until the first call.
    """
    return AsyncMongoClient(
        url,
        appname=app_name,
        serverSelectionTimeoutMS=round(server_selection_timeout * 1000),
        connectTimeoutMS=round(connect_timeout * 1000),
        socketTimeoutMS=None if socket_timeout is None else round(socket_timeout * 1000),
    )


def database(
    client: AsyncMongoClient[Document], name: str | None = None
) -> AsyncDatabase[Document]:
    """The database `name`, else the one the URL names, else ``coffeebus``."""
    if name is not None:
        return client[name]
    return client.get_default_database(default=DEFAULT_DATABASE)


async def ensure_indexes(
    db: AsyncDatabase[Document],
    indexes: Mapping[Collection, tuple[IndexSpec, ...]] = INDEXES,
) -> None:
    """Create every declared index (idempotent; run at start).

    An existing index of the same name with another definition makes the server refuse:
    that error is left to stop the start, since code and database disagree.
    """
    for collection, specs in indexes.items():
        if not specs:
            continue
        models = [IndexModel(list(spec.keys), name=spec.name, unique=spec.unique) for spec in specs]
        created = await db[collection].create_indexes(models)
        logger.debug("indexes of %s.%s: %s", db.name, collection, created)


async def ping(client: AsyncMongoClient[Document]) -> None:
    """Raise unless the server answers (readiness check)."""
    await client.admin.command("ping")
