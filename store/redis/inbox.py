"""`InboxStore` on the users' hot state in Redis, the document store behind it.

The fanout group appends inbox entries here (and logs them to ``im.log.user``) before it
delivers anything; the ``projection`` group writes the log into the document store and then
trims each inbox to its window (`RedisInboxStore.trim`). Keys, scripts and the completeness
rules: `store.redis.user_state`.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from schemas.ids import ConversationId, UserId
from store.inbox import InboxEntry, InboxPage, InboxStore
from store.messages import StoredMessage, check_limit
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.messages import RedisMessageStore
from store.redis.scripts import NO_WAIT, ReplicaWait, ScriptRunner
from store.redis.user_state import (
    APPEND,
    DEFAULT_IDLE_TTL,
    DEFAULT_INBOX_WINDOW,
    FILL_HEAD,
    TRIM,
    counts_as_unread,
    last_value,
    pad,
    ttl_ms,
    user_calls,
)

__all__ = ["RedisInboxStore"]


class RedisInboxStore:
    """An `InboxStore` on the user's hot state, the document store `cold` behind it.

    Args:
        redis: the Redis holding hot state.
        cold: the document store's inbox (read only here; the projection writes it).
        messages: where an entry's message is read (its conversation's hot timeline).
        keys: the key namespace.
        window: entries per user kept beyond what the projection has not written.
        idle_ttl: how long an unwritten user's hot state lives.
        replicas: the replicas that must acknowledge a write before it returns
            (`store.redis.scripts.ReplicaWait`; ``[redis] wait_replicas``).
    """

    def __init__(
        self,
        redis: RedisClient,
        cold: InboxStore,
        messages: RedisMessageStore,
        *,
        keys: RedisKeys | None = None,
        window: int = DEFAULT_INBOX_WINDOW,
        idle_ttl: datetime.timedelta = DEFAULT_IDLE_TTL,
        replicas: ReplicaWait = NO_WAIT,
    ) -> None:
        if window < 1:
            raise ValueError(f"the hot window holds at least one entry, not {window}")
        self._redis = redis
        self.cold = cold
        self._messages = messages
        self._keys = keys or RedisKeys()
        self.window = window
        self._ttl_ms = ttl_ms(idle_ttl)
        self._append = ScriptRunner(redis, APPEND, replicas=replicas)
        self._trim = ScriptRunner(redis, TRIM)
        self._fill_head = ScriptRunner(redis, FILL_HEAD)

    async def append(self, entries: Sequence[InboxEntry]) -> list[int]:
        """Append each entry not already in its user's inbox (one script per shard, one
        round trip); an entry counts as unread for its user if `counts_as_unread` and above
        the read seq. Returns each entry's inbox seq if appended, minus the original's if it
        was already there, 0 if it had left Redis (the store has it)."""
        return await self._write(entries, touch=False)

    async def deliver(self, entries: Sequence[InboxEntry]) -> list[int]:
        """`append`, and in the same script the users' sessions moved to the entries'
        messages (`RedisSessionStore.touch_many`), new entries or not: the fanout group's one
        write per entry (`store.timelines.UserTimelines`)."""
        return await self._write(entries, touch=True)

    async def _write(self, entries: Sequence[InboxEntry], *, touch: bool) -> list[int]:
        # A message's encoding is made once, however many recipients it has (a group).
        lasts: dict[int, bytes] = {}

        def args_of(entry: InboxEntry) -> list[Any]:
            msg = entry.message
            last = b""
            if touch:
                last = lasts.get(id(msg)) or lasts.setdefault(id(msg), last_value(msg))
            return [
                entry.inbox_seq,
                msg.conversation,
                msg.seq,
                pad(msg.seq),
                1 if counts_as_unread(msg, entry.user_id) else 0,
                msg.created_ms,
                last,
            ]

        calls, orders = user_calls(
            self._keys, entries, lambda e: e.user_id, args_of, [self._ttl_ms]
        )
        answers = await self._append.run_many(calls)
        done = [0] * len(entries)
        for order, answer in zip(orders, answers, strict=True):
            for i, value in zip(order, answer, strict=True):
                done[i] = int(value)
        return done

    async def append_new(self, entries: Sequence[InboxEntry]) -> list[bool]:
        """`append`: which entries were new."""
        return [seq > 0 for seq in await self.append(entries)]

    async def append_many(self, entries: Sequence[InboxEntry]) -> int:
        """`append`: how many were new."""
        return sum(seq > 0 for seq in await self.append(entries))

    async def trim(self, upto: Mapping[UserId, int]) -> int:
        """After the projection wrote each user's entries up to the given inbox seq: drop
        them from Redis beyond the newest `window` (one script per shard). Returns how many
        were dropped."""
        calls, _ = user_calls(
            self._keys,
            list(upto.items()),
            lambda item: item[0],
            lambda item: [item[1]],
            [self._ttl_ms, self.window],
        )
        return sum(sum(int(n) for n in answer) for answer in await self._trim.run_many(calls))

    async def after(self, user_id: UserId, after_seq: int, limit: int) -> InboxPage:
        """Entries after `after_seq`, ascending: those below the floor from the store (one
        query), the rest from Redis, each with its message's current version.

        The index ``ib`` is read before the floor, in one pipeline: a trim may run between
        any two commands of it, and only ever raises the floor, so an entry the index read
        missed is below the floor read after it and the store has it (read the other way
        round, entries trimmed in between would be in neither part of the page).

        A page never skips an entry: `has_more` says whether the index holds more than the
        page, and an entry whose message cannot be read ends the page before it (with
        `has_more`), so a client syncing on from the page's last seq asks for it again; a page
        that needs the store below a fresh floor is empty, with `has_more`, until the
        projection has written up to it. Both happen only after Redis lost what the
        projection had not written yet, or briefly after a user's keys expired
        (docs/reliability.md, "Redis without persistence")."""
        check_limit(limit)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(
                self._keys.inbox(user_id),
                f"({after_seq}",
                "+inf",
                start=0,
                num=limit + 1,
                withscores=True,
            )
            pipe.hmget(self._keys.user_state(user_id), ["#floor", "#fresh"])
            hot, (raw_floor, fresh) = await pipe.execute()
        floor = None if raw_floor is None else int(raw_floor)
        entries: list[InboxEntry] = []
        if floor is not None and fresh is not None and after_seq + 1 < floor:
            # The store may not have everything below a floor a writer has just set
            # (`store.redis.user_state`, "Fresh floors"): nothing until the projection has.
            return InboxPage([], has_more=True)
        if floor is None or after_seq + 1 < floor:
            page = await self.cold.after(user_id, after_seq, limit + 1)
            entries = [e for e in page.entries if floor is None or e.inbox_seq < floor]
            if floor is None:
                # No hot entries: the store answers (and will until a writer appends one
                # and sets the floor: `store.redis.user_state.FILL_HEAD` says why).
                more = page.has_more or len(entries) > limit
                return InboxPage(entries[:limit], has_more=more)
        # An entry below the floor in Redis too (appended late by a process that lost its
        # partition, or read from the index just before a trim) is the store's to answer,
        # once.
        refs = [
            (bytes(ref), int(score))
            for ref, score in hot
            if not entries or int(score) >= (floor or 0)
        ]
        if len(entries) < limit + 1 and refs:
            wanted = refs[: limit + 1 - len(entries)]
            resolved = await self._resolve([r for r, _ in wanted])
            for (_, score), msg in zip(wanted, resolved, strict=True):
                if msg is None:
                    return InboxPage(entries[:limit], has_more=True)
                entries.append(InboxEntry(user_id=user_id, inbox_seq=score, message=msg))
        return InboxPage(entries[:limit], has_more=len(entries) > limit)

    async def _resolve(self, refs: Sequence[bytes]) -> list[StoredMessage | None]:
        """The messages "<conv>|<seq>" name (`RedisMessageStore.get_many`: one round trip)."""
        parsed: list[tuple[ConversationId, int]] = []
        for ref in refs:
            conv, _, seq = ref.decode().rpartition("|")
            parsed.append((ConversationId(conv), int(seq)))
        found = await self._messages.get_many(parsed)
        return [found.get(p) for p in parsed]

    async def head(self, user_id: UserId) -> int:
        """The highest inbox seq: Redis's, or the store's (then cached)."""
        cached = await self._redis.hget(self._keys.user_state(user_id), "#head")
        if cached is not None:
            return int(cached)
        head = await self.cold.head(user_id)
        await self._fill_head.run([self._keys.user_state(user_id)], [head, self._ttl_ms])
        return head

    async def count_unread(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, int]:
        """Unread messages above each read seq, from ``ur``."""
        convs = list(read_seqs)
        key = self._keys.unread(user_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for conv in convs:
                pipe.zlexcount(key, f"({conv}|{pad(read_seqs[conv])}", f"({conv}}}")
            counts = await pipe.execute()
        return {c: int(n) for c, n in zip(convs, counts, strict=True)}

    async def unread_seqs(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, list[int]]:
        """Unread seqs above each read seq, from ``ur``."""
        convs = list(read_seqs)
        key = self._keys.unread(user_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for conv in convs:
                pipe.zrangebylex(key, f"({conv}|{pad(read_seqs[conv])}", f"({conv}}}")
            members = await pipe.execute()
        return {
            c: [int(bytes(m).rpartition(b"|")[2]) for m in found]
            for c, found in zip(convs, members, strict=True)
        }
