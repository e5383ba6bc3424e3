"""Bulk writes that are safe to replay.

Every timeline write is idempotent, so a bulk write meets duplicate keys in two ways: a
replayed record re-inserting what is already there (skip it), and two upserts racing to
create one document (run the loser again: it now finds the document to update). Both show
up as write errors with code 11000; any other error is real and raises.

- `insert_new`: one unordered ``insert_many``; the duplicates are reported, not raised.
- `update_all`: idempotent update statements (`update_op`). On MongoDB one unordered
  ``bulk_write``, and the statements that failed with a duplicate key are sent again; on
  FerretDB v1 raw ``update`` commands in small chunks (`store.mongo.compat.update_chunked`
  says why), chosen by ``server``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from store.mongo.client import DUPLICATE_KEY, Document
from store.mongo.compat import MongoServer, update_chunked

__all__ = ["insert_new", "update_all", "update_op"]

logger = logging.getLogger(__name__)

_MAX_UPDATE_ROUNDS = 5


def update_op(query: Document, update: Document, *, upsert: bool = False) -> Document:
    """One update statement: ``{q, u, upsert}``, as an ``update`` command carries it."""
    return {"q": query, "u": update, "upsert": upsert}


async def insert_new(collection: AsyncCollection[Document], docs: Sequence[Document]) -> set[int]:
    """Insert `docs` in one unordered bulk, skipping those whose unique key already exists.

    Returns the indexes (into `docs`) of the skipped duplicates. Raises `BulkWriteError` for
    any other write error (after the other documents were inserted — they are idempotent).
    Unordered inserts continue past duplicates on MongoDB and FerretDB v1 alike.
    """
    if not docs:
        return set()
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        details = exc.details
        errors = details.get("writeErrors", [])
        if details.get("writeConcernErrors") or any(
            err.get("code") != DUPLICATE_KEY for err in errors
        ):
            raise
        return {int(err["index"]) for err in errors}
    return set()


async def update_all(
    collection: AsyncCollection[Document],
    ops: Sequence[Document],
    *,
    server: MongoServer = MongoServer.FERRETDB_V1,
) -> None:
    """Apply every idempotent `update_op` in `ops`, in as few round trips as the server allows.

    Duplicate-key errors (racing upserts) are resolved by sending the affected statements
    again; any other error raises `OperationFailure` (a `BulkWriteError` on MongoDB).
    """
    if not ops:
        return
    if server is MongoServer.FERRETDB_V1:
        await update_chunked(collection, ops)
        return
    requests = [UpdateOne(op["q"], op["u"], upsert=bool(op.get("upsert"))) for op in ops]
    pending = list(range(len(requests)))
    for round_no in range(1, _MAX_UPDATE_ROUNDS + 1):
        try:
            await collection.bulk_write([requests[i] for i in pending], ordered=False)
            return
        except BulkWriteError as exc:
            details = exc.details
            errors = details.get("writeErrors", [])
            if (
                details.get("writeConcernErrors")
                or not errors
                or any(err.get("code") != DUPLICATE_KEY for err in errors)
                or round_no == _MAX_UPDATE_ROUNDS
            ):
                raise
            logger.debug(
                "update of %s: %d duplicate-key errors, resending those of %d",
                collection.name,
                len(errors),
                len(pending),
            )
            pending = [pending[int(err["index"])] for err in errors]
