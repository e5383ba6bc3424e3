"""FerretDB v1 compatibility: every workaround the MongoDB adapters make for it, in one place.

The tests run on FerretDB v1 (no MongoDB build is reachable here), which speaks MongoDB's wire
protocol but differs from MongoDB where it matters to concurrent writers. The adapters are
written for MongoDB and call this module where FerretDB v1 needs another way; which way is
chosen once per process by ``[mongo] server`` (`resolve_server`):

- ``"auto"`` (the default): ask the server (``buildInfo``; FerretDB adds ``ferretdbVersion``)
  and log the decision;
- ``"mongodb"``: the plain MongoDB way everywhere, none of the workarounds below;
- ``"ferretdb-v1"``: every workaround below.

The stores take the choice as ``server=`` (`MongoServer`; a store built without it takes
``FERRETDB_V1``, whose ways are correct on every server, only slower). All processes of a
deployment must run the same choice, as ``"auto"`` makes them do.

Workarounds, paid in ``ferretdb-v1`` mode only (observed on v1.24.2):

- **Updates as raw, small ``update`` commands** (`update_chunked`, behind
  `store.mongo.bulk.update_all`). An unordered ``update`` stops at its first write error
  like an ordered one, and its reply then lacks ``nModified``, which makes PyMongo's
  ``bulk_write`` fail with a ``KeyError`` while merging results: so updates go out as a raw
  command, and after a duplicate-key error (two upserts racing to create one document)
  every operation from the first failed one on is sent again (they are idempotent). On the
  SQLite backend an ``update`` keeps one of the database's 100 pooled SQLite connections per
  statement until the whole command ends, so a command of 100 statements never returns —
  nor do several smaller ones that together hold the 100 (a restarted consumer replaying a
  backlog froze for minutes): commands carry at most `MAX_OPS_PER_COMMAND` (8) statements and
  each process runs at most `MAX_CONCURRENT_UPDATES` (2) at a time. On ``mongodb``:
  ``bulk_write`` of ``UpdateOne``s, and only the operations that failed with a duplicate key
  are sent again.
- **Seq sections claimed by unique-key inserts** (`ClaimedSections`, behind
  `store.mongo.seq.MongoSectionStore`). FerretDB v1 applies an update as an unlocked
  read-modify-write: 20 concurrent ``$inc`` of one document left 7 applied, and concurrent
  ``find_one_and_update`` calls returned the same maximum. A unique-key insert is atomic on
  both. On ``mongodb``: one ``$inc`` (``find_one_and_update``) per reservation.

Recognised in every mode, since recognising costs nothing:

- `is_busy_error`: FerretDB v1 on SQLite answers a write that waited out SQLite's busy
  timeout with ``InternalError`` (code 1) and "database is locked" (``SQLITE_BUSY``); the
  write did not happen and may be sent again, so `store.mongo.errors` classes it as transient.

Not workarounds but the design, kept on every server:

- `store.mongo.client.ensure_indexes` sends only the missing indexes. It reads the existing
  ones anyway, to fail on a declared name with another definition; FerretDB v1.24 also drops
  the connection when a ``createIndexes`` of two or more existing indexes is repeated.
- No ``null`` in ``$setOnInsert`` (FerretDB v1 stores nothing for it): a missing field reads
  as None on every server (`store.mongo.users`).
- The last message and the read seq of a session live in two collections
  (`store.mongo.sessions`) so that every document has one writer group; on MongoDB that
  costs one more query per session list, and a layout that differed by server would make a
  move between servers a migration.
- Composite string ``_id``s and primary-key point reads (`store.mongo.collections`): the
  fastest lookup on every server, and the only filter FerretDB v1 pushes down.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import bson
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, OperationFailure

from store.mongo.client import DUPLICATE_KEY, Document

__all__ = [
    "MAX_CONCURRENT_UPDATES",
    "MAX_OPS_PER_COMMAND",
    "ClaimedSections",
    "MongoServer",
    "ServerSetting",
    "is_busy_error",
    "resolve_server",
    "server_of",
    "update_chunked",
]

logger = logging.getLogger(__name__)


class MongoServer(enum.StrEnum):
    """Which server the MongoDB adapters write for."""

    #: MongoDB: the plain way, no workaround.
    MONGODB = "mongodb"
    #: FerretDB v1: every workaround of this module.
    FERRETDB_V1 = "ferretdb-v1"


#: ``[mongo] server``: a `MongoServer`, or ``"auto"`` to ask the server.
ServerSetting = Literal["auto", "mongodb", "ferretdb-v1"]


def server_of(build_info: Mapping[str, Any]) -> MongoServer:
    """The mode for a server that answered ``buildInfo`` with `build_info`.

    FerretDB adds ``ferretdbVersion``. Any FerretDB gets ``FERRETDB_V1``: the workarounds
    are correct on every server, and whether a later FerretDB needs them is not known here
    (set ``[mongo] server = "mongodb"`` to try without).
    """
    return MongoServer.FERRETDB_V1 if "ferretdbVersion" in build_info else MongoServer.MONGODB


async def resolve_server(
    client: AsyncMongoClient[Document], setting: ServerSetting | MongoServer
) -> MongoServer:
    """The mode to run in: `setting` unless it is ``"auto"``, else what the server says.

    Logs the decision and why. Asking sends one ``buildInfo`` (it raises, like any first
    command, when the server cannot be reached).
    """
    if setting != "auto":
        server = MongoServer(setting)
        logger.info("MongoDB adapters in %s mode, as [mongo] server says", server.value)
        return server
    info = await client.admin.command("buildInfo")
    server = server_of(info)
    if "ferretdbVersion" in info:
        found = f"FerretDB {info['ferretdbVersion']} (MongoDB {info.get('version', '?')} API)"
    else:
        found = f"MongoDB {info.get('version', '?')}"
    logger.info(
        "MongoDB adapters in %s mode: the server is %s ([mongo] server = auto)",
        server.value,
        found,
    )
    return server


# --- updates: raw commands in small chunks --------------------------------------------

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


async def update_chunked(collection: AsyncCollection[Document], ops: Sequence[Document]) -> None:
    """Apply idempotent ``update`` statements (`store.mongo.bulk.update_op`) as raw commands of
    at most `MAX_OPS_PER_COMMAND`, at most `MAX_CONCURRENT_UPDATES` at a time per process.

    After duplicate-key errors (racing upserts) every statement from the first failed one on
    is sent again; any other error raises `OperationFailure`.
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


# --- seq sections: claimed by inserts ---------------------------------------------------


class ClaimedSections:
    """Seq sections of ``seq_sections`` claimed by *inserting* them (module docstring).

    Documents: one per reserved section, ``{_id: "<timeline>#<k>", lo, hi}`` for the k-th
    section of a timeline (seqs ``lo..hi``), plus a hint ``{_id: "<timeline>", k}`` naming a
    recently claimed section. Reserving reads the hint, then tries to insert section k+1
    with ``lo`` = section k's ``hi`` + 1; a duplicate key means someone else claimed k+1, so
    it moves on to k+2. Only one insert of a given ``_id`` can succeed, so sections never
    overlap and always continue the highest one: claimed sections form the prefix 1..K,
    since a claim is made at the first free k above a claimed one. The hint is advanced with
    ``$max`` afterwards; if that write is lost, the next claim just probes a little further.
    Every lookup is by ``_id``. Costs: four round trips per reservation.
    """

    def __init__(self, sections: AsyncCollection[Document]) -> None:
        self._sections = sections

    async def reserve(self, timeline: str, size: int) -> int:
        """Claim the next section of `size` seqs; return its highest seq."""
        k = await self._hint(timeline)
        while True:
            prev_hi = await self._section_hi(timeline, k) if k else 0
            try:
                await self._sections.insert_one(
                    {"_id": _section_id(timeline, k + 1), "lo": prev_hi + 1, "hi": prev_hi + size}
                )
            except DuplicateKeyError:
                k += 1  # claimed by someone else: continue above it
                continue
            await self._advance_hint(timeline, k + 1)
            return prev_hi + size

    async def reserved(self, timeline: str) -> int:
        """The highest seq claimed (0 if none)."""
        k = await self._hint(timeline)
        hi = await self._section_hi(timeline, k) if k else 0
        while True:
            doc = await self._sections.find_one({"_id": _section_id(timeline, k + 1)})
            if doc is None:
                return hi
            k, hi = k + 1, int(doc["hi"])

    async def _hint(self, timeline: str) -> int:
        doc = await self._sections.find_one({"_id": timeline})
        return 0 if doc is None else int(doc.get("k", 0))

    async def _section_hi(self, timeline: str, k: int) -> int:
        doc = await self._sections.find_one({"_id": _section_id(timeline, k)})
        if doc is None:
            raise RuntimeError(f"section {k} of {timeline} is missing from seq_sections")
        return int(doc["hi"])

    async def _advance_hint(self, timeline: str, k: int) -> None:
        try:
            await self._sections.update_one({"_id": timeline}, {"$max": {"k": k}}, upsert=True)
        except DuplicateKeyError:
            # Two first claims raced to create the hint; it is only a hint.
            logger.debug("hint of %s raced, left to the next claim", timeline)


def _section_id(timeline: str, k: int) -> str:
    return f"{timeline}#{k}"


# --- errors ----------------------------------------------------------------------------

# FerretDB v1 on SQLite answers a write that waited out SQLite's busy timeout with
# InternalError (code 1) and this text; the write did not happen and may be sent again.
_BUSY_CODE = 1
_BUSY_MARKERS = ("SQLITE_BUSY", "database is locked")


def is_busy_error(code: object, message: str) -> bool:
    """Whether a server error (its code and message) is FerretDB's "database is locked"."""
    return code == _BUSY_CODE and any(marker in message for marker in _BUSY_MARKERS)
