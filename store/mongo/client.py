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
from pymongo.errors import AutoReconnect

from store.errors import IndexConflictError
from store.mongo.collections import INDEXES, Collection, IndexSpec

logger = logging.getLogger(__name__)

Document = dict[str, Any]
DEFAULT_DATABASE = "coffeebus"
#: The server's error code for a duplicate key.
DUPLICATE_KEY = 11000
#: How often `ensure_indexes` looks again after the server dropped its request (below).
INDEX_ATTEMPTS = 3


def connect_mongo(
    url: str,
    *,
    app_name: str = "coffeebus",
    server_selection_timeout: float = 5.0,
    connect_timeout: float = 5.0,
    socket_timeout: float | None = None,
) -> AsyncMongoClient[Document]:
    """A client for `url` with bounded timeouts (seconds).

    Server selection and connecting fail within seconds when the server is unreachable,
    instead of PyMongo's default 30 s selection wait. No socket timeout by default (as
    PyMongo advises): a large bulk write may legitimately take long, and a deadline for one
    operation belongs to its caller (``pymongo.timeout(seconds)``). Connecting is lazy:
    nothing is sent until the first call.
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
) -> list[str]:
    """Create every declared index that does not exist yet; return the names created.

    Run at every start. Existing indexes are compared with their declaration, and one
    under a declared name with other keys or uniqueness raises `IndexConflictError`, since
    code and database disagree. Only missing indexes are sent to the server: besides
    sparing the work, FerretDB v1.24 drops the connection (a server-side panic) when a
    ``createIndexes`` naming two or more indexes that all exist already is repeated. Two
    processes starting at once on a new database (a gate and the API) can still both find an
    index missing and both ask for it; the one whose connection is dropped looks again and
    asks only for what is still missing.
    """
    created: list[str] = []
    for collection, specs in indexes.items():
        if not specs:
            continue
        for attempt in range(1, INDEX_ATTEMPTS + 1):
            existing = await db[collection].index_information()
            missing = [spec for spec in specs if not _matches_existing(collection, spec, existing)]
            if not missing:
                break
            models = [
                IndexModel(list(spec.keys), name=spec.name, unique=spec.unique) for spec in missing
            ]
            try:
                created += await db[collection].create_indexes(models)
                break
            except AutoReconnect:
                if attempt == INDEX_ATTEMPTS:
                    raise
                logger.info(
                    "createIndexes on %s.%s: the server dropped the connection (another "
                    "process creating them at the same time?); looking again",
                    db.name,
                    collection,
                )
    if created:
        logger.info("created indexes in database %s: %s", db.name, ", ".join(created))
    return created


def _matches_existing(
    collection: Collection, spec: IndexSpec, existing: Mapping[str, Document]
) -> bool:
    """Whether `spec` exists already; raise if its name is taken by another definition."""
    found = existing.get(spec.name)
    if found is None:
        return False
    keys = tuple((str(field), int(direction)) for field, direction in found["key"])
    unique = bool(found.get("unique", False))
    if keys != spec.keys or unique != spec.unique:
        raise IndexConflictError(
            f"index {spec.name!r} of {collection} is {keys} unique={unique} in the database "
            f"but declared as {spec.keys} unique={spec.unique}; drop it or rename the "
            "declaration"
        )
    return True


async def ping(client: AsyncMongoClient[Document]) -> None:
    """Raise unless the server answers (readiness check)."""
    await client.admin.command("ping")
