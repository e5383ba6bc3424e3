"""Users' inboxes, sessions, read and delivery marks served from Redis, the store behind.

The fanout group appends inbox entries and moves sessions here (and logs them to
``im.log.user``) before it delivers anything; the ack group moves read and delivery marks
here (and logs them). The ``projection`` group writes the log into the document store and
then trims inboxes in Redis. So a user's recent inbox, every session with its last message,
read seq and exact unread count, and the delivery marks are answered from Redis, whatever
the projection's lag (read-your-writes).

Per user, under one hash tag ``{u<id>}`` (one Redis Cluster slot; every script here gets all
seven keys and refreshes the TTL of all of them, so they expire together after `idle_ttl`
without a write):

==================  ======  ==================================================================
key                 type    holds
==================  ======  ==================================================================
``ib:{u<id>}``      zset    recent inbox entries "<conv>|<seq>", scored by inbox seq
``im:{u<id>}``      hash    ``#head`` (highest inbox seq), ``#floor`` (every inbox seq ≥ it is
                            in ``ib``, every one below in the store), ``#init`` (the sessions
                            here are complete), ``t:<conv>`` (highest seq of the conversation
                            trimmed from ``ib``: the entries' dedupe once they left)
``ss:{u<id>}``      zset    conversations scored by their last change (ms)
``sl:{u<id>}``      hash    conversation → "<seq>|<last message>"
``rd:{u<id>}``      hash    conversation → read seq
``ur:{u<id>}``      zset    unread messages "<conv>|<seq, 20 digits>" (all scores 0: by lex)
``dl:{u<id>}``      hash    conversation → highest seq a device acked
==================  ======  ==================================================================

Unread counts stay exact across seq gaps and any interleaving of fan-out and read acks: an
append adds its message to ``ur`` only if it counts (`counts_as_unread`) and is above the read
seq, a read removes everything up to it, each in one script on the user's slot, and a count
is a ``ZLEXCOUNT`` of the conversation's range.

Completeness (``#init``): writers create a user's keys from nothing when they are gone — a new
user, one idle past the TTL, a Redis that lost its data — and cannot know what the document
store holds from before. The first read of such a user merges the store's sessions, read seqs
and unread messages in (`RedisSessionStore.repair`: two queries, once per user and hot-state
lifetime), then marks it complete. Everything merged is a max or a union, so a repair racing
with writers loses nothing. After a Redis that lost data, what the projection had not yet
written is missing from such a repair until nothing: counts can stay low for those messages
(docs/operations.md, "Redis").
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from redis.asyncio import Redis

from schemas.ids import ConversationId, UserId
from store.clock import Clock, SystemClock
from store.deliveries import DeliveryMark
from store.hot_messages import (
    DEFAULT_IDLE_TTL,
    RedisMessageStore,
    decode_message,
    encode_message,
)
from store.hot_scripts import ScriptRunner
from store.inbox import InboxEntry, InboxPage, InboxStore
from store.keys import RedisKeys
from store.messages import StoredMessage, check_limit
from store.sessions import ReadMark, Session, SessionStore, SessionTouch, count_reads, session_peer

__all__ = [
    "DEFAULT_INBOX_WINDOW",
    "REPAIR_SESSIONS",
    "HotTimelines",
    "RedisDeliveryStore",
    "RedisInboxStore",
    "RedisSessionStore",
    "UserKeys",
    "counts_as_unread",
]

#: Inbox entries of a user kept in Redis beyond those the projection has not written: what a
#: device that was away catches up on by sync without the store.
DEFAULT_INBOX_WINDOW: Final = 1000
#: Sessions a repair takes from the store (the most recently changed).
REPAIR_SESSIONS: Final = 1000


def counts_as_unread(message: StoredMessage, user_id: UserId) -> bool:
    """Whether `message` in `user_id`'s inbox counts as unread until read: others' messages."""
    return message.from_user_id != user_id


def _pad(seq: int) -> str:
    """A seq as ``ur`` orders it: 20 digits, so lex order is numeric order."""
    return f"{seq:020d}"


# Every user script gets KEYS = ib, im, ss, sl, rd, ur, dl and ARGV[1] = the TTL in ms, and
# ends by refreshing the TTL of every key that exists.
_KEYS: Final = 7
_EXPIRE: Final = """
for k = 1, 7 do redis.call('PEXPIRE', KEYS[k], ARGV[1]) end
"""

# ARGV[2..]: per entry 5 values: inbox seq, conv, seq, 20-digit seq, counts (1/0). Returns per
# entry its inbox seq if appended now, minus the original's if it is in ib, 0 if it left ib.
_APPEND: Final = (
    """
local out = {}
local head = tonumber(redis.call('HGET', KEYS[2], '#head') or '0')
local first = nil
for i = 2, #ARGV, 5 do
  local iseq, conv, seq = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ref = conv .. '|' .. seq
  local have = redis.call('ZSCORE', KEYS[1], ref)
  if have then
    out[#out + 1] = -tonumber(have)
  elseif tonumber(seq) <= tonumber(redis.call('HGET', KEYS[2], 't:' .. conv) or '0') then
    out[#out + 1] = 0
  else
    redis.call('ZADD', KEYS[1], iseq, ref)
    local read = tonumber(redis.call('HGET', KEYS[5], conv) or '0')
    if ARGV[i + 4] == '1' and tonumber(seq) > read then
      redis.call('ZADD', KEYS[6], 0, conv .. '|' .. ARGV[i + 3])
    end
    if tonumber(iseq) > head then head = tonumber(iseq) end
    if not first then first = iseq end
    out[#out + 1] = tonumber(iseq)
  end
end
if first then
  redis.call('HSETNX', KEYS[2], '#floor', first)
  redis.call('HSET', KEYS[2], '#head', head)
end
"""
    + _EXPIRE
    + "return out"
)

# ARGV[2..]: per touch 4 values: conv, seq, time ms, "<seq>|<message>".
_TOUCH: Final = (
    """
for i = 2, #ARGV, 4 do
  local conv, seq = ARGV[i], tonumber(ARGV[i + 1])
  local cur = redis.call('HGET', KEYS[4], conv)
  if not cur or tonumber(string.match(cur, '^(%d+)|')) < seq then
    redis.call('HSET', KEYS[4], conv, ARGV[i + 3])
  end
  redis.call('ZADD', KEYS[3], 'GT', ARGV[i + 2], conv)
end
"""
    + _EXPIRE
    + "return 1"
)

# ARGV[2] now ms; ARGV[3..]: per mark 3 values: conv, seq, 20-digit seq. Returns each
# session's read seq from before the mark.
_READ: Final = (
    """
local out = {}
for i = 3, #ARGV, 3 do
  local conv, seq = ARGV[i], tonumber(ARGV[i + 1])
  local prev = tonumber(redis.call('HGET', KEYS[5], conv) or '0')
  out[#out + 1] = prev
  if seq > prev then
    redis.call('HSET', KEYS[5], conv, ARGV[i + 1])
    redis.call('ZREMRANGEBYLEX', KEYS[6], '[' .. conv .. '|', '[' .. conv .. '|' .. ARGV[i + 2])
    redis.call('ZADD', KEYS[3], 'GT', ARGV[2], conv)
  end
end
"""
    + _EXPIRE
    + "return out"
)

# ARGV[2..]: per mark 2 values: conv, seq.
_DELIVER: Final = (
    """
for i = 2, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > tonumber(redis.call('HGET', KEYS[7], ARGV[i]) or '0') then
    redis.call('HSET', KEYS[7], ARGV[i], ARGV[i + 1])
  end
end
"""
    + _EXPIRE
    + "return 1"
)

# ARGV[2] after ms, ARGV[3] limit, ARGV[4] a conversation or "" (then all). Returns #init
# ("" if unset), then per session with a last message (or the one named, with or without),
# newest first: conv, time, last ("" if none), read seq, unread count.
_LIST: Final = """
local out = {redis.call('HGET', KEYS[2], '#init') or ''}
local limit = tonumber(ARGV[3])
local function add(conv, score, bare)
  local last = redis.call('HGET', KEYS[4], conv)
  if not last and not bare then return false end
  out[#out + 1] = conv
  out[#out + 1] = score
  out[#out + 1] = last or ''
  out[#out + 1] = redis.call('HGET', KEYS[5], conv) or '0'
  out[#out + 1] = redis.call('ZLEXCOUNT', KEYS[6], '[' .. conv .. '|', '(' .. conv .. '}')
  return true
end
if ARGV[4] ~= '' then
  local score = redis.call('ZSCORE', KEYS[3], ARGV[4])
  if score then add(ARGV[4], score, true) end
  return out
end
local got, offset = 0, 0
while got < limit do
  local page = redis.call('ZREVRANGEBYSCORE', KEYS[3], '+inf', '(' .. ARGV[2],
                          'WITHSCORES', 'LIMIT', offset, limit)
  if #page == 0 then break end
  for j = 1, #page, 2 do
    if add(page[j], page[j + 1]) then
      got = got + 1
      if got >= limit then break end
    end
  end
  offset = offset + #page / 2
end
return out
"""

# ARGV[2] number of sessions; then per session 5 values: conv, time ms, "<seq>|<message>" or
# "", read seq, 20-digit read seq; then per unread message 2 values: conv, 20-digit seq.
# Merges the store's view in (max and union), then marks the user complete.
_REPAIR: Final = (
    """
local n = tonumber(ARGV[2])
local i = 3
for s = 1, n do
  local conv, value, read = ARGV[i], ARGV[i + 2], tonumber(ARGV[i + 3])
  redis.call('ZADD', KEYS[3], 'GT', ARGV[i + 1], conv)
  if value ~= '' then
    local cur = redis.call('HGET', KEYS[4], conv)
    local seq = tonumber(string.match(value, '^(%d+)|'))
    if not cur or tonumber(string.match(cur, '^(%d+)|')) < seq then
      redis.call('HSET', KEYS[4], conv, value)
    end
  end
  if read > tonumber(redis.call('HGET', KEYS[5], conv) or '0') then
    redis.call('HSET', KEYS[5], conv, ARGV[i + 3])
    redis.call('ZREMRANGEBYLEX', KEYS[6], '[' .. conv .. '|', '[' .. conv .. '|' .. ARGV[i + 4])
  end
  i = i + 5
end
while i < #ARGV do
  local conv, pad = ARGV[i], ARGV[i + 1]
  if tonumber(pad) > tonumber(redis.call('HGET', KEYS[5], conv) or '0') then
    redis.call('ZADD', KEYS[6], 0, conv .. '|' .. pad)
  end
  i = i + 2
end
redis.call('HSET', KEYS[2], '#init', 1)
"""
    + _EXPIRE
    + "return 1"
)

# KEYS: ib, im. ARGV: the highest inbox seq the store now has, the window. Drops entries the
# store has, beyond the newest `window`; remembers per conversation the highest seq dropped
# (the dedupe of entries that left) and raises the floor.
_TRIM: Final = """
local n = redis.call('ZCARD', KEYS[1])
local window = tonumber(ARGV[2])
if n <= window then return 0 end
local cut = redis.call('ZRANGE', KEYS[1], n - window - 1, n - window - 1, 'WITHSCORES')
local limit = math.min(tonumber(cut[2]), tonumber(ARGV[1]))
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', limit)
if #gone == 0 then return 0 end
for _, ref in ipairs(gone) do
  local conv, seq = string.match(ref, '^(.*)|(%d+)$')
  if tonumber(seq) > tonumber(redis.call('HGET', KEYS[2], 't:' .. conv) or '0') then
    redis.call('HSET', KEYS[2], 't:' .. conv, seq)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', limit)
if limit + 1 > tonumber(redis.call('HGET', KEYS[2], '#floor') or '0') then
  redis.call('HSET', KEYS[2], '#floor', limit + 1)
end
return #gone
"""

# KEYS: im. ARGV: the store's inbox head, ttl ms. Raises #head (a read-through fill).
_FILL_HEAD: Final = """
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], '#head') or '-1') then
  redis.call('HSET', KEYS[1], '#head', ARGV[1])
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
end
return 1
"""


class UserKeys:
    """The seven keys of a user's hot state, in the order the scripts take them."""

    def __init__(self, keys: RedisKeys) -> None:
        self.keys = keys

    def all(self, user_id: int) -> list[str]:
        """ib, im, ss, sl, rd, ur, dl."""
        k = self.keys
        return [
            k.inbox(user_id),
            k.inbox_meta(user_id),
            k.session_order(user_id),
            k.session_last(user_id),
            k.reads(user_id),
            k.unread(user_id),
            k.delivered(user_id),
        ]


def _ttl_ms(ttl: datetime.timedelta) -> int:
    if ttl <= datetime.timedelta(0):
        raise ValueError("a TTL must be positive")
    return max(1, round(ttl.total_seconds() * 1000))


def _by_user(items: Iterable[Any], user_of: Callable[[Any], int]) -> dict[int, list[int]]:
    """Indexes of `items` grouped by user, users in first-seen order."""
    groups: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(user_of(item), []).append(index)
    return groups


def _last_value(msg: StoredMessage) -> bytes:
    return b"%d|" % msg.seq + encode_message(msg)


def _last_from(value: bytes) -> StoredMessage:
    return decode_message(value[value.index(b"|") + 1 :])


class RedisInboxStore:
    """An `InboxStore` on the user's hot state, the document store `cold` behind it.

    Args:
        redis: the Redis holding hot state.
        cold: the document store's inbox (read only here; the projection writes it).
        messages: where an entry's message is read (its conversation's hot timeline).
        keys: the key namespace.
        window: entries per user kept beyond what the projection has not written.
        idle_ttl: how long an unwritten user's hot state lives.
    """

    def __init__(
        self,
        redis: Redis,
        cold: InboxStore,
        messages: RedisMessageStore,
        *,
        keys: RedisKeys | None = None,
        window: int = DEFAULT_INBOX_WINDOW,
        idle_ttl: datetime.timedelta = DEFAULT_IDLE_TTL,
    ) -> None:
        if window < 1:
            raise ValueError(f"the hot window holds at least one entry, not {window}")
        self._redis = redis
        self.cold = cold
        self._messages = messages
        self._keys = keys or RedisKeys()
        self._user = UserKeys(self._keys)
        self.window = window
        self._ttl_ms = _ttl_ms(idle_ttl)
        self._append = ScriptRunner(redis, _APPEND)
        self._trim = ScriptRunner(redis, _TRIM)
        self._fill_head = ScriptRunner(redis, _FILL_HEAD)

    async def append(self, entries: Sequence[InboxEntry]) -> list[int]:
        """Append each entry not already in its user's inbox (one script per user, one
        round trip); an entry counts as unread for its user if `counts_as_unread` and above
        the read seq. Returns each entry's inbox seq if appended, minus the original's if it
        was already there, 0 if it had left Redis (the store has it)."""
        groups = _by_user(entries, lambda e: e.user_id)
        calls = []
        for user, indexes in groups.items():
            args: list[Any] = [self._ttl_ms]
            for i in indexes:
                entry = entries[i]
                msg = entry.message
                args += [
                    entry.inbox_seq,
                    msg.conversation,
                    msg.seq,
                    _pad(msg.seq),
                    1 if counts_as_unread(msg, entry.user_id) else 0,
                ]
            calls.append((self._user.all(user), args))
        answers = await self._append.run_many(calls)
        done = [0] * len(entries)
        for indexes, answer in zip(groups.values(), answers, strict=True):
            for i, value in zip(indexes, answer, strict=True):
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
        them from Redis beyond the newest `window`. Returns how many were dropped."""
        calls = [
            ([self._keys.inbox(u), self._keys.inbox_meta(u)], [seq, self.window])
            for u, seq in upto.items()
        ]
        return sum(int(n) for n in await self._trim.run_many(calls))

    async def after(self, user_id: UserId, after_seq: int, limit: int) -> InboxPage:
        """Entries after `after_seq`, ascending: those below the floor from the store (one
        query), the rest from Redis, each with its message's current version."""
        check_limit(limit)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._keys.inbox_meta(user_id), "#floor")
            pipe.zrangebyscore(
                self._keys.inbox(user_id),
                f"({after_seq}",
                "+inf",
                start=0,
                num=limit + 1,
                withscores=True,
            )
            raw_floor, hot = await pipe.execute()
        floor = None if raw_floor is None else int(raw_floor)
        entries: list[InboxEntry] = []
        more = False
        if floor is None or after_seq + 1 < floor:
            page = await self.cold.after(user_id, after_seq, limit + 1)
            entries = [e for e in page.entries if floor is None or e.inbox_seq < floor]
            if floor is None:
                more = page.has_more or len(entries) > limit
                return InboxPage(entries[:limit], has_more=more)
        # An entry below the floor in Redis too (appended late by a process that lost its
        # partition) is the store's to answer, once.
        refs = [
            (bytes(ref), int(score))
            for ref, score in hot
            if not entries or int(score) >= (floor or 0)
        ]
        if len(entries) < limit + 1 and refs:
            wanted = refs[: limit + 1 - len(entries)]
            resolved = await self._resolve([r for r, _ in wanted])
            for (_, score), msg in zip(wanted, resolved, strict=True):
                if msg is not None:
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
        cached = await self._redis.hget(self._keys.inbox_meta(user_id), "#head")
        if cached is not None:
            return int(cached)
        head = await self.cold.head(user_id)
        await self._fill_head.run([self._keys.inbox_meta(user_id)], [head, self._ttl_ms])
        return head

    async def count_unread(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, int]:
        """Unread messages above each read seq, from ``ur``."""
        convs = list(read_seqs)
        key = self._keys.unread(user_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for conv in convs:
                pipe.zlexcount(key, f"({conv}|{_pad(read_seqs[conv])}", f"({conv}}}")
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
                pipe.zrangebylex(key, f"({conv}|{_pad(read_seqs[conv])}", f"({conv}}}")
            members = await pipe.execute()
        return {
            c: [int(bytes(m).rpartition(b"|")[2]) for m in found]
            for c, found in zip(convs, members, strict=True)
        }


class RedisSessionStore:
    """A `SessionStore` on the user's hot state, the document store `cold` behind it.

    Args:
        redis: the Redis holding hot state.
        cold: the document store's sessions (read only here; the projection writes them).
        cold_inbox: the document store's inbox (unread messages, for `repair`).
        keys: the key namespace.
        idle_ttl: how long an unwritten user's hot state lives.
        clock: the time read marks are stamped with.
    """

    def __init__(
        self,
        redis: Redis,
        cold: SessionStore,
        cold_inbox: InboxStore,
        *,
        keys: RedisKeys | None = None,
        idle_ttl: datetime.timedelta = DEFAULT_IDLE_TTL,
        clock: Clock | None = None,
    ) -> None:
        self._redis = redis
        self.cold = cold
        self._cold_inbox = cold_inbox
        self._keys = keys or RedisKeys()
        self._user = UserKeys(self._keys)
        self._ttl_ms = _ttl_ms(idle_ttl)
        self._clock = clock or SystemClock()
        self._touch = ScriptRunner(redis, _TOUCH)
        self._read = ScriptRunner(redis, _READ)
        self._list = ScriptRunner(redis, _LIST)
        self._repair = ScriptRunner(redis, _REPAIR)
        #: repairs in flight, so that concurrent first reads of a user share one
        self._repairing: dict[UserId, asyncio.Task[None]] = {}

    # --- writes ----------------------------------------------------------------------------

    async def touch_many(self, touches: Sequence[SessionTouch]) -> None:
        """Move each session's last message forward (one script per user, one round trip)."""
        groups = _by_user(touches, lambda t: t.user_id)
        calls = []
        for user, indexes in groups.items():
            args: list[Any] = [self._ttl_ms]
            for i in indexes:
                msg = touches[i].message
                session_peer(UserId(user), msg.conversation)  # validates the conversation id
                args += [msg.conversation, msg.seq, msg.created_ms, _last_value(msg)]
            calls.append((self._user.all(user), args))
        await self._touch.run_many(calls)

    async def advance_reads(self, marks: Sequence[ReadMark]) -> list[int]:
        """Move read seqs forward (and the unread counts with them); each session's read
        seq from before the call."""
        now = self._clock.now_ms()
        groups = _by_user(marks, lambda m: m.user_id)
        calls = []
        for user, indexes in groups.items():
            args: list[Any] = [self._ttl_ms, now]
            for i in indexes:
                mark = marks[i]
                session_peer(mark.user_id, mark.conversation)
                args += [mark.conversation, mark.seq, _pad(mark.seq)]
            calls.append((self._user.all(user), args))
        answers = await self._read.run_many(calls)
        before = [0] * len(marks)
        for indexes, answer in zip(groups.values(), answers, strict=True):
            first: dict[ConversationId, int] = {}
            for i, value in zip(indexes, answer, strict=True):
                before[i] = first.setdefault(marks[i].conversation, int(value))
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
        sessions = await self.cold.recent(user_id, 0, REPAIR_SESSIONS)
        keys = self._user.all(user_id)
        hot_reads = (
            await self._redis.hmget(keys[4], [s.conversation for s in sessions]) if sessions else []
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
                b"" if s.last is None else _last_value(s.last),
                s.read_seq,
                _pad(s.read_seq),
            ]
        for conv, seqs in unread.items():
            for seq in seqs:
                args += [conv, _pad(seq)]
        await self._repair.run(keys, args)

    async def _listed(
        self, user_id: UserId, after_ms: int, limit: int, conversation: str = ""
    ) -> list[Any]:
        """The LIST script's answer, after a repair if the user was not complete."""
        keys = self._user.all(user_id)
        answer: list[Any] = await self._list.run(
            keys, [self._ttl_ms, after_ms, limit, conversation]
        )
        if not answer[0]:
            await self.repair(user_id)
            answer = await self._list.run(keys, [self._ttl_ms, after_ms, limit, conversation])
        return answer

    async def _complete(self, user_ids: Iterable[UserId]) -> None:
        """Repair whichever of `user_ids` is not complete (one round trip to ask)."""
        users = list(dict.fromkeys(user_ids))
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.hget(self._keys.inbox_meta(user), "#init")
            flags = await pipe.execute()
        todo = [u for u, flag in zip(users, flags, strict=True) if flag is None]
        if todo:
            await asyncio.gather(*(self.repair(u) for u in todo))

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
                    last=_last_from(bytes(answer[j + 2])) if answer[j + 2] else None,
                    read_seq=int(answer[j + 3]),
                    updated_ms=int(float(answer[j + 1])),
                    unread=int(answer[j + 4]),
                )
            )
        return sessions

    async def recent(self, user_id: UserId, updated_after_ms: int, limit: int) -> list[Session]:
        """Sessions with a message changed after `updated_after_ms`, newest first, with
        exact unread counts: one script."""
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
        """The read seq (0 if none)."""
        return (await self.read_seqs_of(conversation, [user_id]))[user_id]

    async def read_seqs_of(
        self, conversation: ConversationId, user_ids: Iterable[UserId]
    ) -> dict[UserId, int]:
        """Each user's read seq in the conversation: from Redis for complete users, from
        Redis and the store (one query for all the others) for the rest."""
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.hget(self._keys.reads(user), conversation)
                pipe.hget(self._keys.inbox_meta(user), "#init")
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


class RedisDeliveryStore:
    """A `DeliveryStore` on the users' hot state (``dl``). Delivery marks matter for the
    delivery timer, seconds after a push; a user whose hot state is gone has acked nothing
    recently, so a miss is 0 and never a store read (after a Redis that lost data, that may
    cost an offline push too many)."""

    def __init__(
        self,
        redis: Redis,
        *,
        keys: RedisKeys | None = None,
        idle_ttl: datetime.timedelta = DEFAULT_IDLE_TTL,
    ) -> None:
        self._redis = redis
        self._keys = keys or RedisKeys()
        self._user = UserKeys(self._keys)
        self._ttl_ms = _ttl_ms(idle_ttl)
        self._deliver = ScriptRunner(redis, _DELIVER)

    async def mark_delivered_many(self, marks: Sequence[DeliveryMark]) -> None:
        """Move marks forward (one script per user, one round trip)."""
        groups = _by_user(marks, lambda m: m.user_id)
        calls = []
        for user, indexes in groups.items():
            args: list[Any] = [self._ttl_ms]
            for i in indexes:
                args += [marks[i].conversation, marks[i].seq]
            calls.append((self._user.all(user), args))
        await self._deliver.run_many(calls)

    async def delivered_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The highest acked seq (0 if none)."""
        return (await self.delivered_seqs([(user_id, conversation)]))[(user_id, conversation)]

    async def delivered_seqs(
        self, pairs: Iterable[tuple[UserId, ConversationId]]
    ) -> dict[tuple[UserId, ConversationId], int]:
        """The highest acked seq of each pair: one pipelined round trip."""
        wanted = list(dict.fromkeys(pairs))
        async with self._redis.pipeline(transaction=False) as pipe:
            for user, conv in wanted:
                pipe.hget(self._keys.delivered(user), conv)
            found = await pipe.execute()
        return {p: int(v or 0) for p, v in zip(wanted, found, strict=True)}


class HotTimelines:
    """The projection's view of the hot state: trim what the document store now has
    (`consumers.projection.HotTrim`)."""

    def __init__(self, messages: RedisMessageStore, inbox: RedisInboxStore) -> None:
        self._messages = messages
        self._inbox = inbox

    async def trim_conversations(self, upto: dict[ConversationId, int]) -> int:
        """`RedisMessageStore.trim`."""
        return await self._messages.trim(upto) if upto else 0

    async def trim_inboxes(self, upto: dict[UserId, int]) -> int:
        """`RedisInboxStore.trim`."""
        return await self._inbox.trim(upto) if upto else 0
