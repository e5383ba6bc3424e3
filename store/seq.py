"""Timeline sequence numbers as WeChat's seqsvr allocates them.

Every timeline — a conversation (``s:<low>:<high>``, ``g:<id>``) or a user's inbox
(`inbox_timeline`, ``u:<id>``) — has its own seq. Seqs are handed out **in memory** by the
single owner of the partition the timeline's key maps to, from *sections* reserved in a
`SectionStore` (MongoDB ``seq_sections``: `store.mongo.seq.MongoSectionStore`). Reserving a
section atomically claims the range above every range reserved before for that timeline; no
other process can be given any part of it, whatever the interleaving.

A new owner — another process, or the same one after a rebalance — never trusts what it may
have cached: `SeqAllocator.forget` (on partition revoke/assign) or `SeqAllocator.reset`
drops the in-memory sections, so the next allocation reserves a fresh one above every seq
the previous owner could have handed out. Seqs therefore never go backwards; the rest of an
abandoned section is a gap, which readers must tolerate (unread counts are counted, never
computed from seq differences).

Costs: one reservation (a round trip on MongoDB, four on FerretDB v1, all by ``_id``) per
`section_size` allocations per timeline, and per timeline after each ownership change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, TypeVar

from bus.partitioner import partition_for_key
from schemas.ids import UserId

logger = logging.getLogger(__name__)
#: A timeline name (a conversation id, an inbox timeline, or a plain str).
_Timeline = TypeVar("_Timeline", bound=str)


DEFAULT_SECTION_SIZE = 1000


def inbox_timeline(user_id: UserId) -> str:
    """The timeline key of a user's inbox (conversation ids start with ``s:`` or ``g:``)."""
    return f"u:{user_id}"


class SectionStore(Protocol):
    """Where the highest reserved seq of every timeline is persisted."""

    async def reserve(self, timeline: str, size: int) -> int:
        """Atomically raise the timeline's reserved maximum by `size` and return the new
        maximum; the caller owns ``(new_max - size, new_max]``. A timeline never reserved
        before starts at 0."""
        ...

    async def reserved(self, timeline: str) -> int:
        """The highest seq ever reserved for the timeline (0 if none)."""
        ...


def check_section_size(size: int) -> None:
    """Reject a section that holds no seq (every `SectionStore.reserve` checks)."""
    if size < 1:
        raise ValueError(f"a section holds at least one seq, not {size}")


class _Section:
    __slots__ = ("last", "next")

    def __init__(self, next_seq: int, last: int) -> None:
        self.next = next_seq
        self.last = last

    @property
    def left(self) -> int:
        return self.last - self.next + 1


class SeqAllocator:
    """Allocates seqs of the timelines this process owns, in memory, from reserved sections.

    Within one process, allocations for one timeline are strictly increasing whatever the
    concurrency: a coroutine takes seqs from the current section without awaiting; only
    reserving a new section awaits, under a lock that exists for that timeline only while the
    reservation is in flight (so idle timelines cost one small object each, not a lock).

    Args:
        sections: where sections are persisted.
        section_size: seqs reserved per round trip (a larger batch reserves what it needs).
    """

    def __init__(self, sections: SectionStore, *, section_size: int = DEFAULT_SECTION_SIZE) -> None:
        check_section_size(section_size)
        self._store = sections
        self._section_size = section_size
        self._sections: dict[str, _Section] = {}
        self._reserving: dict[str, asyncio.Lock] = {}

    async def allocate(self, timeline: str, n: int = 1) -> range:
        """Allocate `n` consecutive seqs of `timeline`, all above every seq allocated for it
        before (by this process or any previous owner)."""
        while True:
            taken = self.take(timeline, n)
            if taken is not None:
                return taken
            lock = self._reserving.get(timeline)
            if lock is not None:
                # Someone is reserving for this timeline: wait for it, then try again.
                async with lock:
                    pass
                continue
            lock = self._reserving[timeline] = asyncio.Lock()
            async with lock:
                try:
                    await self._reserve(timeline, n, lock)
                finally:
                    if self._reserving.get(timeline) is lock:
                        del self._reserving[timeline]

    def take(self, timeline: str, n: int = 1) -> range | None:
        """`n` seqs of `timeline` from its current section, without awaiting; None when the
        section is missing, too short or being replaced (`allocate` then reserves)."""
        if n < 1:
            raise ValueError(f"allocate at least one seq, not {n}")
        section = self._sections.get(timeline)
        if section is None or section.left < n or timeline in self._reserving:
            return None
        first = section.next
        section.next += n
        return range(first, first + n)

    async def allocate_many(self, counts: Mapping[_Timeline, int]) -> dict[_Timeline, range]:
        """`allocate(timeline, n)` for every timeline of `counts`: those whose section has
        room are served at once, the others reserve concurrently. A handler's batch touches
        many timelines (a fan-out, one per recipient) and nearly all have room: gathering a
        task for each would cost more than the allocations themselves."""
        ranges: dict[_Timeline, range] = {}
        missing: list[_Timeline] = []
        for timeline, n in counts.items():
            taken = self.take(timeline, n)
            if taken is None:
                missing.append(timeline)
            else:
                ranges[timeline] = taken
        if missing:
            found = await asyncio.gather(*(self.allocate(t, counts[t]) for t in missing))
            ranges.update(zip(missing, found, strict=True))
        return ranges

    async def next(self, timeline: str) -> int:
        """Allocate one seq."""
        return (await self.allocate(timeline, 1))[0]

    async def _reserve(self, timeline: str, n: int, lock: asyncio.Lock) -> None:
        size = max(self._section_size, n)
        new_max = await self._store.reserve(timeline, size)
        if self._reserving.get(timeline) is not lock:
            # `forget` or `reset` ran while the reservation was in flight: this process may
            # no longer own the timeline, so the section is abandoned (a gap).
            return
        first = new_max - size + 1
        section = self._sections.get(timeline)
        if section is not None and section.last + 1 == first:
            # Nobody reserved in between: the new section continues the current one.
            section.last = new_max
        else:
            self._sections[timeline] = _Section(first, new_max)
        logger.debug("reserved seqs %d..%d of %s", first, new_max, timeline)

    def forget(self, timelines: Iterable[str]) -> None:
        """Drop the sections of `timelines` (call when their partitions are revoked or
        assigned): their next allocation starts a fresh section."""
        for timeline in timelines:
            self._sections.pop(timeline, None)
            self._reserving.pop(timeline, None)

    def forget_where(self, owned_elsewhere: Callable[[str], bool]) -> None:
        """Drop the sections of every timeline for which `owned_elsewhere` is true (e.g. whose
        key maps to a revoked partition)."""
        self.forget([t for t in (*self._sections, *self._reserving) if owned_elsewhere(t)])

    def forget_partitions(
        self, partitions: Iterable[int], count: int, key_of: Callable[[str], bytes]
    ) -> None:
        """Drop the sections of timelines whose record key (`key_of(timeline)`) maps to one of
        `partitions` of a topic of `count` partitions: call it from a consumer's assigned /
        revoked hooks, since another member may have allocated from them meanwhile."""
        mine = set(partitions)
        if mine:
            self.forget_where(lambda t: partition_for_key(key_of(t), count) in mine)

    def reset(self) -> None:
        """Drop every section (a rebalance of unknown extent)."""
        self._sections.clear()
        self._reserving.clear()

    def owned(self) -> int:
        """How many timelines have a section in memory."""
        return len(self._sections)
