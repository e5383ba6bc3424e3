"""`SectionStore` on MongoDB."""

from __future__ import annotations

import logging

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from store.mongo.client import Document
from store.mongo.collections import Collection
from store.seq import check_section_size

logger = logging.getLogger(__name__)


class MongoSectionStore:
    """`SectionStore` on MongoDB ``seq_sections``, claiming sections by *inserting* them.

    Documents: one per reserved section, ``{_id: "<timeline>#<k>", lo, hi}`` for the k-th
    section of a timeline (seqs ``lo..hi``), plus a hint ``{_id: "<timeline>", k}`` naming a
    recently claimed section. Reserving reads the hint, then tries to insert section k+1
    with ``lo`` = section k's ``hi`` + 1; a duplicate key means someone else claimed k+1, so
    it moves on to k+2. Only one insert of a given ``_id`` can succeed, so sections never
    overlap and always continue the highest one: claimed sections form the prefix 1..K,
    since a claim is made at the first free k above a claimed one. The hint is advanced with
    ``$max`` afterwards; if that write is lost, the next claim just probes a little further.

    Why not one document per timeline and ``$inc`` (``find_one_and_update``): that is what
    MongoDB makes atomic, but FerretDB v1 on SQLite applies every update as an unlocked
    read-modify-write — 20 concurrent ``$inc`` of one document left 7 of them applied, and
    concurrent ``find_one_and_update`` calls returned the same maximum (measured on
    v1.24.2). A unique-key insert is atomic on both. Every lookup here is by ``_id``, the
    only filter FerretDB v1 pushes down. Intended shard key: ``_id``.
    """

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._sections: AsyncCollection[Document] = db[Collection.SEQ_SECTIONS]

    async def reserve(self, timeline: str, size: int) -> int:
        """Claim the next section of `size` seqs; return its highest seq."""
        check_section_size(size)
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
        """The highest reserved seq (0 if none)."""
        k = await self._hint(timeline)
        hi = await self._section_hi(timeline, k) if k else 0
        while True:
            doc = await self._sections.find_one({"_id": _section_id(timeline, k + 1)})
            if doc is None:
                return hi
            k, hi = k + 1, int(doc["hi"])

    async def _hint(self, timeline: str) -> int:
        doc = await self._sections.find_one({"_id": timeline})
        return 0 if doc is None else int(doc["k"])

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
