"""The push log: which offline pushes were already sent (the `PushLog` protocol).

The ``push`` group sends at most one push per (user, conversation, seq), however many times
the timer or push records behind it are replayed: before sending, it *claims* the push's key
with an insert into the log by ``_id``; a key that is already there was claimed by an earlier
run, and that push is not sent again. Claim-then-send makes the push *at most once*: a member
that dies between the claim and the send loses that one push (the message itself is safe in
the inbox and shows on the next sync) — a duplicate alert on every replay would be worse.

``im.push`` keeps its records for a day, so a claim older than that can never be made again:
`PushLog.prune` deletes them (a maintenance job; the log is correct without it).

Implementations: `store.memory.push_log.MemoryPushLog`, `store.mongo.push_log.MongoPushLog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["PushLog"]


class PushLog(Protocol):
    """Claims of sent pushes."""

    async def claim(self, keys: Sequence[str], at_ms: int) -> list[bool]:
        """Claim each key in one bulk write; per key, whether this call claimed it (True:
        send the push) or an earlier one had (False: it was sent, or is being sent)."""
        ...

    async def prune(self, before_ms: int) -> int:
        """Delete claims made before `before_ms`; how many."""
        ...
