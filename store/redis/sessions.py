"""`SessionStore` on the users' hot state in Redis, the document store behind it.

Sessions (last message, read seq, exact unread count, order) are kept by the fanout group's
touches and the inbox appends, and by the ack group's read marks; a user whose hot state is
not complete is repaired from the document store on its first read. Keys, scripts and the
completeness rules: `store.redis.user_state`.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterable, Sequence
from typing import Any

from schemas.ids import ConversationId, UserId
from store.clock import Clock, SystemClock
from store.inbox import InboxStore
from store.messages import check_limit
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.scripts import NO_WAIT, ReplicaWait, ScriptRunner
from store.redis.user_state import (
    DEFAULT_IDLE_TTL,
    LIST,
    READ,
    REPAIR,
    REPAIR_SESSIONS,
    TOUCH,
    UserKeys,
    last_from,
    last_value,
    pad,
    ttl_ms,
    user_calls,
)
from store.sessions import ReadMark, Session, SessionStore, SessionTouch, count_reads, session_peer

__all__ = ["RedisSessionStore"]


class RedisSessionStore:
    """A `SessionStore` on the user's hot state, the document store `cold` behind it.

    Args:
        redis: the Redis holding hot state.
        cold: the document store's sessions (read only here; the projection writes them).
        cold_inbox: the document store's inbox (unread messages, for `repair`).
        keys: the key namespace.
        idle_ttl: how long an unwritten user's hot state lives.
        clock: the time read marks are stamped with.
        replicas: the replicas that must acknowledge a write before it returns
            (`store.redis.scripts.ReplicaWait`; ``[redis] wait_replicas``).
    """

    def __init__(
        self,
        redis: RedisClient,
        cold: SessionStore,
        cold_inbox: InboxStore,
        *,
        keys: RedisKeys | None = None,
        idle_ttl: datetime.timedelta = DEFAULT_IDLE_TTL,
        clock: Clock | None = None,
        replicas: ReplicaWait = NO_WAIT,
    ) -> None:
        self._redis = redis
        self.cold = cold
        self._cold_inbox = cold_inbox
        self._keys = keys or RedisKeys()
        self._user = UserKeys(self._keys)
        self._ttl_ms = ttl_ms(idle_ttl)
        self._clock = clock or SystemClock()
        self._touch = ScriptRunner(redis, TOUCH, replicas=replicas)
        self._read = ScriptRunner(redis, READ, replicas=replicas)
        self._list = ScriptRunner(redis, LIST)
        self._repair = ScriptRunner(redis, REPAIR)
        #: repairs in flight, so that concurrent first reads of a user share one
        self._repairing: dict[UserId, asyncio.Task[None]] = {}

    # --- writes ----------------------------------------------------------------------------

    async def touch_many(self, touches: Sequence[SessionTouch]) -> None:
        """Move each session's last message forward (one script per shard, one round trip)."""
        lasts: dict[int, bytes] = {}

        def args_of(touch: SessionTouch) -> list[Any]:
            msg = touch.message
            session_peer(touch.user_id, msg.conversation)  # validates the conversation id
            last = lasts.get(id(msg)) or lasts.setdefault(id(msg), last_value(msg))
            return [msg.conversation, msg.seq, msg.created_ms, last]

        calls, _ = user_calls(self._keys, touches, lambda t: t.user_id, args_of, [self._ttl_ms])
        await self._touch.run_many(calls)

    async def advance_reads(self, marks: Sequence[ReadMark]) -> list[int]:
        """Move read seqs forward (and the unread counts with them); each session's read
        seq from before the call (for marks of one session, from before the first)."""
        for mark in marks:
            session_peer(mark.user_id, mark.conversation)
        calls, orders = user_calls(
            self._keys,
            marks,
            lambda m: m.user_id,
            lambda m: [m.conversation, m.seq, pad(m.seq)],
            [self._ttl_ms, self._clock.now_ms()],
        )
        answers = await self._read.run_many(calls)
        before = [0] * len(marks)
        first: dict[tuple[UserId, ConversationId], int] = {}
        for order, answer in zip(orders, answers, strict=True):
            for i, value in zip(order, answer, strict=True):
                mark = marks[i]
                before[i] = first.setdefault((mark.user_id, mark.conversation), int(value))
        return before

    async def mark_read_many(self, marks: Sequence[ReadMark]) -> None:
        """Move read seqs forward."""
        await self.advance_reads(marks)

    async def mark_read(self, user_id: UserId, conversation: ConversationId, seq: int) -> None:
        """Move one read seq forward."""
        await self.advance_reads([ReadMark(user_id, conversation, seq)])

    # --- completeness ----------------------------------------------------------------------

    async def repair(self, user_id: UserId) -> None:
        """Merge the store's sessions, read seqs and unread messages of `user_id` into Redis
        and mark the user complete (module docstring). Concurrent calls share one repair."""
        task = self._repairing.get(user_id)
        if task is None:
            task = asyncio.ensure_future(self._do_repair(user_id))
            self._repairing[user_id] = task
            task.add_done_callback(lambda _: self._repairing.pop(user_id, None))
        await asyncio.shield(task)

    async def _do_repair(self, user_id: UserId) -> None:
        # The unread messages themselves are asked for below: the store's counts are not.
        sessions = await self.cold.recent(user_id, 0, REPAIR_SESSIONS, unread=False)
        keys = self._user.all(user_id)
        hot_reads = (
            await self._redis.hmget(keys[3], [f"r:{s.conversation}" for s in sessions])
            if sessions
            else []
        )
        reads = {
            s.conversation: max(s.read_seq, 0 if hot is None else int(hot))
            for s, hot in zip(sessions, hot_reads, strict=True)
        }
        unread = await self._cold_inbox.unread_seqs(user_id, reads) if reads else {}
        args: list[Any] = [self._ttl_ms, len(sessions)]
        for s in sessions:
            args += [
                s.conversation,
                s.updated_ms,
                b"" if s.last is None else last_value(s.last),
                s.read_seq,
                pad(s.read_seq),
            ]
        for conv, seqs in unread.items():
            for seq in seqs:
                args += [conv, pad(seq)]
        await self._repair.run(keys, args)

    async def _listed(
        self, user_id: UserId, after_ms: int, limit: int, conversation: str = ""
    ) -> list[Any]:
        """The LIST script's answer, after a repair if the user was not complete."""
        keys = self._user.all(user_id)
        answer: list[Any] = await self._list.run(keys, [after_ms, limit, conversation])
        if not answer[0]:
            await self.repair(user_id)
            answer = await self._list.run(keys, [after_ms, limit, conversation])
        return answer

    # --- reads -----------------------------------------------------------------------------

    def _sessions(self, user_id: UserId, answer: list[Any]) -> list[Session]:
        sessions = []
        for j in range(1, len(answer), 5):
            conv = ConversationId(bytes(answer[j]).decode())
            session_type, peer_id = session_peer(user_id, conv)
            sessions.append(
                Session(
                    user_id=user_id,
                    conversation=conv,
                    session_type=session_type,
                    peer_id=peer_id,
                    last=last_from(bytes(answer[j + 2])) if answer[j + 2] else None,
                    read_seq=int(answer[j + 3]),
                    updated_ms=int(float(answer[j + 1])),
                    unread=int(answer[j + 4]),
                )
            )
        return sessions

    async def recent(
        self, user_id: UserId, updated_after_ms: int, limit: int, *, unread: bool = True
    ) -> list[Session]:
        """Sessions with a message changed after `updated_after_ms`, newest first, with
        exact unread counts (kept, not counted: `unread` changes nothing): one script."""
        check_limit(limit)
        sessions = self._sessions(user_id, await self._listed(user_id, updated_after_ms, limit))
        # Ties in time in the conversation's order, as the other stores do.
        sessions.sort(key=lambda s: (s.updated_ms, s.conversation), reverse=True)
        return sessions

    async def get(self, user_id: UserId, conversation: ConversationId) -> Session | None:
        """One session with its unread count, or None."""
        found = self._sessions(user_id, await self._listed(user_id, 0, 1, conversation))
        return found[0] if found else None

    async def read_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The read seq (0 if none): the user's own reads (history, sync) complete its hot
        state once, like its first session list, rather than ask the store every time."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._keys.user_state(user_id), f"r:{conversation}")
            pipe.hget(self._keys.user_state(user_id), "#init")
            read, init = await pipe.execute()
        if init is None:
            await self.repair(user_id)
            read = await self._redis.hget(self._keys.user_state(user_id), f"r:{conversation}")
        return int(read or 0)

    async def peer_read_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """What the hot state holds, without completing it: a peer's history would otherwise
        cost a store query for every user who has not read anything since their state began
        (those show reads made since then; the ack group writes every read here)."""
        read = await self._redis.hget(self._keys.user_state(user_id), f"r:{conversation}")
        return int(read or 0)

    async def read_seqs_of(
        self, conversation: ConversationId, user_ids: Iterable[UserId]
    ) -> dict[UserId, int]:
        """Each user's read seq in the conversation: from Redis for complete users, from
        Redis and the store (one query for all the others) for the rest — the group read
        state asks this of every member, and repairing them all would cost a query each."""
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.hget(self._keys.user_state(user), f"r:{conversation}")
                pipe.hget(self._keys.user_state(user), "#init")
            answers = await pipe.execute()
        reads = {u: int(answers[2 * i] or 0) for i, u in enumerate(users)}
        partial = [u for i, u in enumerate(users) if answers[2 * i + 1] is None]
        if partial:
            cold = await self.cold.read_seqs_of(conversation, partial)
            for user in partial:
                reads[user] = max(reads[user], cold.get(user, 0))
        return reads

    async def read_counts(
        self, conversation: ConversationId, member_ids: Iterable[UserId], seqs: Iterable[int]
    ) -> dict[int, int]:
        """How many members read each seq (`read_seqs_of`)."""
        reads = await self.read_seqs_of(conversation, member_ids)
        return count_reads(reads.values(), seqs)
