"""`make bench`'s run bookkeeping: a part that fails or outlives its deadline is recorded
and the run goes on."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.run import PLANS, RunLog
from schemas.codes import GroupType


async def test_a_part_past_its_deadline_fails_with_a_clear_message() -> None:
    log = RunLog()
    never = asyncio.Event()

    async def stuck() -> dict[str, Any]:
        await never.wait()
        return {"unreachable": True}

    assert await log.guarded("c2c_real", 0.05, stuck) == {}
    assert log.errors == {"c2c_real": "not done within its deadline of 0.05 s"}
    assert log.durations["c2c_real"] >= 0.0


async def test_a_failing_part_is_recorded_and_the_next_one_runs() -> None:
    log = RunLog()

    async def broken() -> dict[str, Any]:
        raise TimeoutError("the SDK gave up")  # not the part's deadline

    async def fine() -> dict[str, Any]:
        return {"figure": 1}

    assert await log.guarded("pull_real", 10, broken) == {}
    assert await log.guarded("baselines", 10, fine) == {"figure": 1}
    assert log.errors == {"pull_real": "TimeoutError: the SDK gave up"}
    assert set(log.durations) == {"pull_real", "baselines"}


def test_the_full_mode_keeps_the_issues_sizes() -> None:
    full = PLANS["full"]
    for sizes in (full.embedded, full.real):
        assert [members for members, _, _ in sizes.groups] == [1000, 2000]
        assert sizes.pull[:2] == (100, 100)


def test_the_quick_mode_runs_the_issues_sizes_on_the_real_services_too() -> None:
    """Issue 13: a 1,000-member NORMAL group and 100 sessions x 100 messages, quick mode."""
    quick = PLANS["quick"]
    for sizes in (quick.embedded, quick.real):
        assert sizes.groups[0][:2] == (1000, GroupType.NORMAL)
        assert sizes.pull[:2] == (100, 100)
