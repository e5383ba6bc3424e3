"""What the fanout group writes for each inbox entry: the entry, and its user's session.

`UserTimelines.deliver` appends entries to their users' inboxes (`InboxStore.append`) and
moves each user's session of the entry's conversation to its message
(`SessionStore.touch_many`), new entries or not (a replay's touch is what repairs a crash
between the two). A store that keeps both in one place does it in one write
(`store.redis.inbox.RedisInboxStore.deliver`); `SeparateTimelines` does it with the two
stores side by side (memory, MongoDB).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from store.inbox import InboxEntry, InboxStore
from store.sessions import SessionStore, SessionTouch

__all__ = ["SeparateTimelines", "UserTimelines"]


class UserTimelines(Protocol):
    """Users' inboxes and sessions, written together."""

    async def deliver(self, entries: Sequence[InboxEntry]) -> list[int]:
        """Append the entries and touch the sessions; each entry's result as
        `InboxStore.append` gives it."""
        ...


class SeparateTimelines:
    """`UserTimelines` over an inbox store and a session store, written concurrently."""

    def __init__(self, inbox: InboxStore, sessions: SessionStore) -> None:
        self.inbox = inbox
        self.sessions = sessions

    async def deliver(self, entries: Sequence[InboxEntry]) -> list[int]:
        """`InboxStore.append` and `SessionStore.touch_many`, side by side."""
        appended, _ = await asyncio.gather(
            self.inbox.append(entries),
            self.sessions.touch_many([SessionTouch(e.user_id, e.message) for e in entries]),
        )
        return appended
