"""The seq allocator and its `SectionStore`s: in memory and on the real MongoDB server."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from bus.partitioner import partition_for_key
from schemas.ids import UserId
from store.memory.seq import MemorySectionStore
from store.mongo.client import Document
from store.mongo.compat import MongoServer
from store.mongo.seq import MongoSectionStore
from store.seq import SectionStore, SeqAllocator, inbox_timeline

CONV = "s:1:2"


@pytest.fixture(
    params=[
        "memory",
        pytest.param(MongoServer.FERRETDB_V1, marks=pytest.mark.mongo),
        pytest.param(MongoServer.MONGODB, marks=pytest.mark.mongo),
    ]
)
def sections(request: pytest.FixtureRequest) -> SectionStore:
    """Each `SectionStore` implementation, empty: in memory, and on MongoDB in each mode."""
    if request.param == "memory":
        return MemorySectionStore()
    db: AsyncDatabase[Document] = request.getfixturevalue("mongo_db")
    return MongoSectionStore(db, server=request.param)


async def test_sections_never_overlap(sections: SectionStore) -> None:
    assert await sections.reserved(CONV) == 0
    assert await sections.reserve(CONV, 10) == 10
    assert await sections.reserve(CONV, 5) == 15
    assert await sections.reserve("g:9", 3) == 3
    assert await sections.reserved(CONV) == 15
    with pytest.raises(ValueError, match="at least one"):
        await sections.reserve(CONV, 0)


async def test_concurrent_first_reservations_hand_out_disjoint_sections(
    sections: SectionStore, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["sections"] is MongoServer.MONGODB:
        # FerretDB v1 hands out one maximum twice here in most runs (16 of 20 on its SQLite
        # backend, 20 of 20 on PostgreSQL).
        pytest.skip("mongodb mode relies on MongoDB's atomic $inc, which FerretDB v1 lacks")
    # Racing upserts of a new timeline: the loser's duplicate key must not lose its $inc.
    maxima = await asyncio.gather(*(sections.reserve("g:77", 10) for _ in range(8)))
    assert sorted(maxima) == [10 * i for i in range(1, 9)]


async def test_allocation_is_consecutive_within_a_section(sections: SectionStore) -> None:
    seqs = SeqAllocator(sections, section_size=100)
    assert await seqs.allocate(CONV, 3) == range(1, 4)
    assert await seqs.next(CONV) == 4
    assert await seqs.allocate(CONV, 96) == range(5, 101)
    # Used up: the next section follows on, no gap while nobody else reserved in between.
    assert await seqs.next(CONV) == 101
    assert await sections.reserved(CONV) == 200
    # A batch larger than a section reserves what it needs, still consecutive.
    assert await seqs.allocate(CONV, 250) == range(102, 352)


async def test_timelines_are_independent(sections: SectionStore) -> None:
    seqs = SeqAllocator(sections, section_size=10)
    assert [await seqs.next(t) for t in (CONV, "g:1", inbox_timeline(UserId(5)), CONV)] == [
        1,
        1,
        1,
        2,
    ]
    assert inbox_timeline(UserId(5)) == "u:5"


async def test_a_new_owner_starts_a_fresh_section_never_going_back(
    sections: SectionStore,
) -> None:
    first = SeqAllocator(sections, section_size=10)
    before = [await first.next(CONV) for _ in range(3)]
    assert before == [1, 2, 3]
    # The partition moves to another process, which starts above all the first could use.
    second = SeqAllocator(sections, section_size=10)
    assert await second.next(CONV) == 11
    # The first gets it back after a rebalance: forgetting makes it start fresh too.
    first.forget([CONV])
    assert await first.next(CONV) == 21
    second.reset()
    assert second.owned() == 0
    assert await second.next(CONV) == 31


async def test_forget_where_drops_only_matching_timelines(sections: SectionStore) -> None:
    seqs = SeqAllocator(sections, section_size=10)
    await seqs.next("g:1")
    await seqs.next("g:2")
    seqs.forget_where(lambda timeline: timeline == "g:1")
    assert await seqs.next("g:1") == 11  # fresh section
    assert await seqs.next("g:2") == 2  # kept


async def test_concurrent_allocations_are_strictly_increasing_and_unique(
    sections: SectionStore,
) -> None:
    seqs = SeqAllocator(sections, section_size=7)
    order: list[int] = []

    async def worker(n: int) -> None:
        for _ in range(20):
            got = await seqs.allocate(CONV, n)
            assert list(got) == sorted(got)
            order.extend(got)

    await asyncio.gather(*(worker(n) for n in (1, 2, 3, 1, 5)))
    assert len(order) == len(set(order)) == 20 * 12
    # Each allocation's range is above every range handed out before it *returned*; the
    # concatenation in completion order is strictly increasing.
    assert order == sorted(order)


async def test_gaps_only_at_section_boundaries_and_owner_changes(
    sections: SectionStore,
) -> None:
    size = 5
    handed_out: list[int] = []
    for restart in range(4):
        seqs = SeqAllocator(sections, section_size=size)
        handed_out.extend([await seqs.next(CONV) for _ in range(restart + 3)])
    assert handed_out == sorted(set(handed_out))
    for prev, cur in itertools.pairwise(handed_out):
        if cur != prev + 1:
            # A jump lands exactly on a section start.
            assert (cur - 1) % size == 0


class GatedSections:
    """A `SectionStore` whose reservations wait at a gate the test opens."""

    def __init__(self, inner: SectionStore) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def reserve(self, timeline: str, size: int) -> int:
        self.entered.set()
        await self.gate.wait()
        return await self.inner.reserve(timeline, size)

    async def reserved(self, timeline: str) -> int:
        return await self.inner.reserved(timeline)


async def test_forget_during_a_reservation_abandons_its_section(sections: SectionStore) -> None:
    gated = GatedSections(sections)
    seqs = SeqAllocator(gated, section_size=10)
    task = asyncio.create_task(seqs.next(CONV))
    await asyncio.wait_for(gated.entered.wait(), timeout=5)
    seqs.forget([CONV])  # the partition is revoked while the reservation is in flight
    gated.gate.set()
    # That reservation (1..10) may belong to a process that no longer owns the timeline:
    # it is abandoned, and the allocation goes on from a fresh section.
    assert await asyncio.wait_for(task, timeout=10) == 11
    assert await sections.reserved(CONV) == 20


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SeqAllocator(MemorySectionStore(), section_size=0)


async def test_allocate_refuses_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="at least one seq"):
        await SeqAllocator(MemorySectionStore()).allocate(CONV, 0)


async def test_forget_partitions_drops_only_the_timelines_of_those_partitions() -> None:
    seqs = SeqAllocator(MemorySectionStore(), section_size=10)
    a, b = "s:1:2", "s:3:4"
    pa, pb = (partition_for_key(t.encode(), 16) for t in (a, b))
    assert pa != pb
    assert list(await seqs.allocate(a, 1)) == [1]
    assert list(await seqs.allocate(b, 1)) == [1]
    seqs.forget_partitions([pa], 16, key_of=str.encode)
    assert list(await seqs.allocate(a, 1)) == [11]  # a new section: a gap, never backwards
    assert list(await seqs.allocate(b, 1)) == [2]  # still owned: its section goes on


async def test_take_serves_only_from_a_section_with_room(sections: SectionStore) -> None:
    seqs = SeqAllocator(sections, section_size=10)
    assert seqs.take(CONV, 1) is None  # no section yet: `allocate` must reserve
    assert await seqs.allocate(CONV, 2) == range(1, 3)
    assert seqs.take(CONV, 3) == range(3, 6)
    assert seqs.take(CONV, 6) is None  # 5 left
    assert seqs.take(CONV, 5) == range(6, 11)
    assert await sections.reserved(CONV) == 10  # take never reserves
    with pytest.raises(ValueError, match="at least one seq"):
        seqs.take(CONV, 0)


async def test_take_waits_for_a_reservation_in_flight(sections: SectionStore) -> None:
    gated = GatedSections(sections)
    seqs = SeqAllocator(gated, section_size=10)
    gated.gate.set()
    await seqs.allocate(CONV, 9)
    gated.gate.clear()
    gated.entered.clear()
    task = asyncio.create_task(seqs.allocate(CONV, 5))  # 1 left: reserves the next section
    await asyncio.wait_for(gated.entered.wait(), timeout=5)
    # The last seq of the old section is not handed out while the section is replaced.
    assert seqs.take(CONV, 1) is None
    gated.gate.set()
    assert await asyncio.wait_for(task, timeout=10) == range(10, 15)


async def test_allocate_many_serves_each_timeline_as_allocate_would(
    sections: SectionStore,
) -> None:
    seqs = SeqAllocator(sections, section_size=10)
    await seqs.allocate("a", 8)
    # "a" has 2 left (needs a new section for 3), "b" has room, "c" is new.
    await seqs.allocate("b", 1)
    ranges = await seqs.allocate_many({"a": 3, "b": 4, "c": 2})
    assert ranges == {"a": range(9, 12), "b": range(2, 6), "c": range(1, 3)}
    assert await sections.reserved("a") == 20
    assert await sections.reserved("b") == 10
    assert await sections.reserved("c") == 10
    assert await seqs.allocate_many({}) == {}
