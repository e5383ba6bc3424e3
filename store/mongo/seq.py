"""`SectionStore` on MongoDB ``seq_sections`` (`store.seq` says what a section is).

On MongoDB a timeline's reserved maximum is one counter, ``{_id: "<timeline>", hi}``, and a
reservation is one ``$inc`` of it (``find_one_and_update``), which MongoDB applies atomically:
no two reservations can return overlapping ranges, whatever the interleaving. On FerretDB v1,
where concurrent ``$inc`` of one document lose updates, sections are claimed by unique-key
inserts instead (`store.mongo.compat.ClaimedSections`, chosen by ``server``).

Moving a deployment from ``ferretdb-v1`` to ``mongodb`` mode keeps seqs increasing: a
timeline's counter is created at the highest section claimed before it (``$max``, so a
racing ``$inc`` is never undone). The other way round is not supported: claims would start
above the claimed sections only, not above the counter. Every lookup is by ``_id``.
Intended shard key: ``_id``.
"""

from __future__ import annotations

import contextlib

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from store.mongo.client import Document
from store.mongo.collections import Collection
from store.mongo.compat import ClaimedSections, MongoServer
from store.seq import check_section_size


class MongoSectionStore:
    """`SectionStore` on MongoDB ``seq_sections`` (module docstring).

    Args:
        db: the database holding ``seq_sections``.
        server: the server's mode (`store.mongo.compat`): ``$inc`` on MongoDB, claimed
            sections on FerretDB v1.
    """

    def __init__(
        self, db: AsyncDatabase[Document], *, server: MongoServer = MongoServer.FERRETDB_V1
    ) -> None:
        self._sections: AsyncCollection[Document] = db[Collection.SEQ_SECTIONS]
        self._claims = ClaimedSections(self._sections)
        self._server = server

    async def reserve(self, timeline: str, size: int) -> int:
        """Reserve the next `size` seqs; return the highest."""
        check_section_size(size)
        if self._server is MongoServer.FERRETDB_V1:
            return await self._claims.reserve(timeline, size)
        while True:
            doc = await self._sections.find_one_and_update(
                {"_id": timeline, "hi": {"$exists": True}},
                {"$inc": {"hi": size}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return int(doc["hi"])
            await self._create_counter(timeline)

    async def reserved(self, timeline: str) -> int:
        """The highest reserved seq (0 if none)."""
        if self._server is MongoServer.MONGODB:
            doc = await self._sections.find_one({"_id": timeline})
            if doc is not None and "hi" in doc:
                return int(doc["hi"])
        return await self._claims.reserved(timeline)

    async def _create_counter(self, timeline: str) -> None:
        """Start the timeline's counter above every section claimed before (none on a
        deployment that always ran on MongoDB)."""
        claimed = await self._claims.reserved(timeline)
        # A racing first reservation may create it first: the $inc that follows finds it.
        with contextlib.suppress(DuplicateKeyError):
            await self._sections.update_one(
                {"_id": timeline}, {"$max": {"hi": claimed}}, upsert=True
            )
