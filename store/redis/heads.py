"""A Redis cache of timeline heads in front of the message and inbox stores.

Two hot paths need only the *head* of a timeline — its highest stored seq — and no message:
the ``ack`` group caps every claimed seq at its conversation's head, and the sync query
(0x0803) reports the user's inbox head. On MongoDB each is the last key of an index range; on
FerretDB v1 (SQLite), which pushes down no filter but ``_id`` equality, each is a scan of the
whole collection, and they get slower as data grows. So, as OpenIM keeps each conversation's
max seq in Redis, the wrappers here keep one string per timeline
(`store.redis.keys.RedisKeys.conversation_head`, `store.redis.keys.RedisKeys.inbox_head`)::

    <ns>head:<conversation>    -> highest stored message seq
    <ns>inbox:<user_id>:head   -> highest stored inbox seq

`CachedMessageStore` and `CachedInboxStore` delegate everything to the wrapped store and:

- after a write, *advance* the head of every timeline written to the highest seq the write
  stored — a Lua max (``SET`` only if greater, never backwards) with `HEAD_TTL`, refreshed
  on every write, so that idle timelines leave Redis;
- read heads from Redis, many keys in one pipeline of single-key commands (never MGET or a
  multi-key script: the keys spread over a Redis Cluster like the per-user keys), and on a
  miss read the wrapped store and fill the cache through the same max (an empty timeline's
  0 for `EMPTY_HEAD_TTL` only).

Coherence without transactions:

- *Nobody can hold a seq the cache does not have.* The msg group stores a run of messages and
  advances their conversations' heads inside ``insert_many``, before it acks the sender or
  publishes the fan-out (`consumers.msg`); every timeline writer goes through it (group
  notifications and system sends are published to ``im.up.msg``; a revocation changes no
  seq). Likewise the fanout group appends inbox entries and advances the users' heads inside
  ``append_new``, before it pushes anything. So a seq a client acks, or an entry it was
  pushed, is already in the cache.
- *Fills never go backwards.* A reader that missed fills with what it read from the store
  through the same max: if a writer advanced the key between the reader's store read and its
  fill, the max keeps the writer's higher value.
- *A crash between the store write and the cache write* leaves a conversation's head behind
  until the record is replayed: the replay finds its messages stored (duplicates carry the
  original seq) and advances the head to them. Meanwhile only queries that read the store
  (history, latest id) can show the stored but uncached messages; an ack of one is capped to
  the cached head, i.e. counts for less until the replay. A `store.messages.SeqConflictError`
  (the rest of its batch is stored) re-reads the batch's heads from the store at once. An
  inbox head cannot be repaired by a replay — replayed entries come with fresh inbox seqs and
  the originals' are not read back — so it stays behind until the user's next new entry or
  until it expires; sync reads the entries themselves from the store and reports
  ``max(head, last entry)``, so only an empty or truncated page states a lower head.
- *A lost Redis* (a restart, an eviction, an expiry) means misses, which refill from the
  store: answers stay exact, only slower.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from schemas.ids import ConversationId, UserId
from store.inbox import InboxEntry, InboxPage, InboxStore
from store.messages import InsertResult, MessageStore, SeqConflictError, StoredMessage
from store.redis.keys import RedisKeys

_S = TypeVar("_S")

# A head is read only while its timeline is in use (acks of recent deliveries, a sync after a
# reconnect). A week keeps every timeline of a weekly rhythm cached, while a timeline idle for
# longer costs one store read when it wakes up — and Redis holds the active timelines, not
# every conversation that ever was. Not a setting: nothing depends on its value but the hit rate.
HEAD_TTL: Final = datetime.timedelta(days=7)

# A head of 0 — a timeline with nothing stored, cached by a miss — lives a minute only: an ack
# may name any conversation, and a client naming many made-up ones must not fill Redis for a
# week. (A scan per made-up conversation and minute is what it can still cost the store.)
EMPTY_HEAD_TTL: Final = datetime.timedelta(minutes=1)

# KEYS[1] a head key; ARGV[1] a seq; ARGV[2] TTL ms. Raises the head to the seq, never lowers
# it; refreshes the TTL either way, but never shortens it (a late fill of 0 must not cut a
# real head's TTL to EMPTY_HEAD_TTL); returns the head.
_ADVANCE: Final = """
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) >= tonumber(ARGV[1]) then
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  return tonumber(cur)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return tonumber(ARGV[1])
"""


class _Heads:
    """Reads and advances head keys: one pipelined round trip for any number of keys."""

    def __init__(self, redis: Redis, ttl: datetime.timedelta) -> None:
        if ttl <= datetime.timedelta(0):
            raise ValueError("ttl must be positive")
        self._redis = redis
        self._ttl_ms = max(1, round(ttl.total_seconds() * 1000))
        self._empty_ttl_ms = min(self._ttl_ms, round(EMPTY_HEAD_TTL.total_seconds() * 1000))
        self._script = redis.register_script(_ADVANCE)

    async def get(self, keys: Sequence[str]) -> list[int | None]:
        """Each key's head, None where Redis has none."""
        if len(keys) == 1:
            values = [await self._redis.get(keys[0])]
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(key)
                values = await pipe.execute()
        return [None if v is None else int(v) for v in values]

    async def advance(self, heads: Mapping[str, int]) -> None:
        """Raise each key's head to the given seq (where it is lower) and refresh its TTL
        (`EMPTY_HEAD_TTL` for a head of 0)."""
        pending = dict(heads)
        for attempt in range(2):
            if not pending:
                return
            # EVALSHA commands, not `Script.__call__` on the pipeline: that asks SCRIPT EXISTS
            # in a round trip of its own before every execute. The script is loaded once, and
            # again after Redis lost it (a restart): NOSCRIPT fails only those commands.
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, seq in pending.items():
                    ttl_ms = self._ttl_ms if seq > 0 else self._empty_ttl_ms
                    pipe.evalsha(self._script.sha, 1, key, seq, ttl_ms)
                results = await pipe.execute(raise_on_error=False)
            failed = dict(zip(pending.items(), results, strict=True))
            errors = [r for r in failed.values() if isinstance(r, Exception)]
            if not errors:
                return
            if attempt or not all(isinstance(e, NoScriptError) for e in errors):
                raise errors[0]
            pending = {key: seq for (key, seq), r in failed.items() if isinstance(r, Exception)}
            await self._redis.script_load(_ADVANCE)


class _Cached(Generic[_S]):
    """A store wrapped with a head cache.

    Args:
        inner: the authoritative store.
        redis: a client of the Redis holding the heads.
        keys: the Redis key namespace.
        ttl: how long an untouched head stays cached.
    """

    def __init__(
        self,
        inner: _S,
        redis: Redis,
        *,
        keys: RedisKeys | None = None,
        ttl: datetime.timedelta = HEAD_TTL,
    ) -> None:
        self._inner = inner
        self._keys = keys or RedisKeys()
        self._heads = _Heads(redis, ttl)


class CachedMessageStore(_Cached[MessageStore]):
    """A `MessageStore` that keeps each conversation's head in Redis (module docstring);
    `inner` is normally `store.mongo.messages.MongoMessageStore`."""

    async def insert_many(self, messages: Sequence[StoredMessage]) -> list[InsertResult]:
        """Store through `inner`, then advance each conversation's head to the highest seq
        stored — a duplicate's original seq included, so that a replay repairs a head a
        crash left behind."""
        try:
            results = await self._inner.insert_many(messages)
        except SeqConflictError:
            # The rest of the batch is stored, but which of it the error does not say. A
            # conflict breaks the single-writer invariant and is rare enough to pay a store
            # read per conversation for exact heads.
            await self._refill({m.conversation for m in messages})
            raise
        heads: dict[str, int] = {}
        for result in results:
            msg = result.message
            key = self._keys.conversation_head(msg.conversation)
            heads[key] = max(heads.get(key, 0), msg.seq)
        await self._heads.advance(heads)
        return results

    async def insert(self, message: StoredMessage) -> InsertResult:
        """Store one message (see `insert_many`)."""
        return (await self.insert_many([message]))[0]

    async def latest_seqs(
        self, conversations: Iterable[ConversationId]
    ) -> dict[ConversationId, int]:
        """Each conversation's head from Redis; the misses from `inner`, then cached."""
        ordered = list(dict.fromkeys(conversations))
        if not ordered:
            return {}
        keys = [self._keys.conversation_head(c) for c in ordered]
        cached = await self._heads.get(keys)
        heads = {c: h for c, h in zip(ordered, cached, strict=True) if h is not None}
        missed = [c for c in ordered if c not in heads]
        if missed:
            heads.update(await self._refill(missed))
        return {c: heads[c] for c in ordered}

    async def _refill(self, conversations: Iterable[ConversationId]) -> dict[ConversationId, int]:
        """The heads from `inner`, put through the max (a concurrent advance wins)."""
        found = await self._inner.latest_seqs(conversations)
        await self._heads.advance({self._keys.conversation_head(c): h for c, h in found.items()})
        return found

    async def get_by_client_ids(
        self, conversation: ConversationId, client_msg_ids: Iterable[str]
    ) -> list[StoredMessage]:
        """From `inner`."""
        return await self._inner.get_by_client_ids(conversation, client_msg_ids)

    async def get_by_seqs(
        self, conversation: ConversationId, seqs: Iterable[int]
    ) -> list[StoredMessage]:
        """From `inner`."""
        return await self._inner.get_by_seqs(conversation, seqs)

    async def history(
        self, conversation: ConversationId, end_seq: int, limit: int
    ) -> list[StoredMessage]:
        """From `inner`."""
        return await self._inner.history(conversation, end_seq, limit)

    async def latest(self, conversation: ConversationId) -> StoredMessage | None:
        """From `inner`: the message itself is not cached."""
        return await self._inner.latest(conversation)

    async def mark_revoked(
        self, conversation: ConversationId, seq: int, *, by: UserId, at_ms: int
    ) -> StoredMessage | None:
        """Through `inner`; a revocation moves no seq, so no head changes."""
        return await self._inner.mark_revoked(conversation, seq, by=by, at_ms=at_ms)


class CachedInboxStore(_Cached[InboxStore]):
    """An `InboxStore` that keeps each user's inbox head in Redis (module docstring);
    `inner` is normally `store.mongo.inbox.MongoInboxStore`."""

    async def append_many(self, entries: Sequence[InboxEntry]) -> int:
        """`append_new`, counted."""
        return sum(await self.append_new(entries))

    async def append_new(self, entries: Sequence[InboxEntry]) -> list[bool]:
        """Append through `inner`, then advance each user's head to the highest inbox seq
        appended. A skipped entry (a replay) moves nothing: its inbox seq is a fresh one that
        stays unused."""
        new = await self._inner.append_new(entries)
        heads: dict[str, int] = {}
        for entry, appended in zip(entries, new, strict=True):
            if appended:
                key = self._keys.inbox_head(entry.user_id)
                heads[key] = max(heads.get(key, 0), entry.inbox_seq)
        await self._heads.advance(heads)
        return new

    async def head(self, user_id: UserId) -> int:
        """The user's inbox head from Redis; on a miss from `inner`, then cached."""
        key = self._keys.inbox_head(user_id)
        (cached,) = await self._heads.get([key])
        if cached is not None:
            return cached
        head = await self._inner.head(user_id)
        await self._heads.advance({key: head})
        return head

    async def after(self, user_id: UserId, after_seq: int, limit: int) -> InboxPage:
        """From `inner`."""
        return await self._inner.after(user_id, after_seq, limit)

    async def count_unread(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, int]:
        """From `inner`."""
        return await self._inner.count_unread(user_id, read_seqs)
