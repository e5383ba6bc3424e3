"""Waiting in tests for state that has no event to await (a store row, a Redis key).

Where an event exists (an SDK push, a closed connection) tests await it directly; this is
for conditions on external state only: poll briefly, fail after `within` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["wait_for"]


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], *, within: float = 20.0
) -> None:
    """Poll `condition` (sync or async) until true; raise TimeoutError after `within` s."""
    async with asyncio.timeout(within):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)
