"""Bulk writes that are safe to replay, on MongoDB and on FerretDB v1 alike.

Every timeline write is idempotent, so a bulk write meets duplicate keys in two ways: a
replayed record re-inserting what is already there (skip it), and two upserts racing to
create one document (run the loser again: it now finds the document to update). Both show
up as write errors with code 11000; any other error is real and raises.

Two FerretDB v1 differences shape this module (both observed on v1.24.2):

- An *unordered* ``update`` command stops at its first write error, like an ordered one,
  and its reply then lacks ``nModified``, which makes PyMongo's ``bulk_write`` fail with a
  ``KeyError`` while merging results. So updates go out as a raw ``update`` command, and
  after a duplicate-key error every operation from the first failed one on is sent again
  (they are idempotent, so re-sending those MongoDB did apply changes nothing).
- Unordered inserts do continue past duplicates, as on MongoDB, so `insert_new` uses
  PyMongo's ``insert_many(ordered=False)``.
- An ``update`` command keeps one pooled SQLite connection per statement it has run until
  the whole command ends (``updateDocument`` defers each statement's query cursor close to
  its return), and each database has a pool of 100 connections. A command of 100 statements
  therefore never returns — and neither do several smaller commands that together hold the
  100: each waits for a connection another one holds, for as long as their clients stay
  connected. That froze a restarted consumer for minutes: replaying a backlog, the fanout
  and ack processes sent concurrent 64-statement updates to one database. So updates go out
  in chunks of `MAX_OPS_PER_COMMAND` (8), and each process (event loop) runs at most
  `MAX_CONCURRENT_UPDATES` (2) update commands at a time: at most 18 connections per
  process, whatever its concurrency, leaving the pool room for five writer processes. On
  MongoDB this costs a few more round trips of commands that are cheap anyway.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence

import bson
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, OperationFailure

from store.mongo.client import Document

logger = logging.getLogger(__name__)


DUPLICATE_KEY = 11000
# A raw command is one BSON document (16 MiB at most, with the command's own fields).
_MAX_COMMAND_BYTES = 8 * 1024 * 1024
# FerretDB v1.24.2 holds a connection of its 100 per statement until the command ends (module
# docstring); it spends ~1.5 ms per modifying statement, so small commands lose little.
MAX_OPS_PER_COMMAND = 8
MAX_CONCURRENT_UPDATES = 2
_MAX_UPDATE_ROUNDS = 5
# One limit per event loop (an asyncio.Semaphore belongs to the loop it first waits on).
_update_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _update_slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slot = _update_slots.get(loop)
    if slot is None:
        slot = _update_slots[loop] = asyncio.Semaphore(MAX_CONCURRENT_UPDATES)
    return slot


def update_op(query: Document, update: Document, *, upsert: bool = False) -> Document:
    """One statement of an ``update`` command."""
    return {"q": query, "u": update, "upsert": upsert}


async def insert_new(collection: AsyncCollection[Document], docs: Sequence[Document]) -> set[int]:
    """Insert `docs` in one unordered bulk, skipping those whose unique key already exists.

    Returns the indexes (into `docs`) of the skipped duplicates. Raises `BulkWriteError` for
    any other write error (after the other documents were inserted — they are idempotent).
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


async def update_all(collection: AsyncCollection[Document], ops: Sequence[Document]) -> None:
    """Apply every idempotent `update_op` in `ops`, in as few round trips as they fit.

    Duplicate-key errors (racing upserts) are resolved by sending the affected operations
    again; any other error raises `OperationFailure`.
    """
    for chunk in _chunks(ops):
        pending: Sequence[Document] = chunk
        for round_no in range(1, _MAX_UPDATE_ROUNDS + 1):
            async with _update_slot():
                reply = await collection.database.command(
                    {"update": collection.name, "updates": list(pending), "ordered": False}
                )
            errors = reply.get("writeErrors") or []
            if reply.get("writeConcernError"):
                raise OperationFailure(f"write concern error: {reply['writeConcernError']}")
            if not errors:
                break
            bad = [err for err in errors if err.get("code") != DUPLICATE_KEY]
            if bad:
                raise OperationFailure(f"update of {collection.name} failed: {bad}", details=reply)
            if round_no == _MAX_UPDATE_ROUNDS:
                raise OperationFailure(
                    f"update of {collection.name}: duplicate keys after {round_no} rounds",
                    code=DUPLICATE_KEY,
                    details=reply,
                )
            first_failed = min(int(err["index"]) for err in errors)
            logger.debug(
                "update of %s: %d duplicate-key errors, resending from %d of %d",
                collection.name,
                len(errors),
                first_failed,
                len(pending),
            )
            pending = pending[first_failed:]


def _chunks(ops: Sequence[Document]) -> list[Sequence[Document]]:
    chunks: list[Sequence[Document]] = []
    start, size = 0, 0
    for i, op in enumerate(ops):
        op_size = len(bson.encode(op))
        if i > start and (size + op_size > _MAX_COMMAND_BYTES or i - start >= MAX_OPS_PER_COMMAND):
            chunks.append(ops[start:i])
            start, size = i, 0
        size += op_size
    if start < len(ops):
        chunks.append(ops[start:])
    return chunks
