"""Conversation timelines served from Redis, with the document store behind them.

The msg group appends a conversation's messages here (and to the log of record,
``im.log.msg``) before it acks the sender; the ``projection`` group writes the log into the
document store behind, then trims what it wrote from Redis. So Redis always holds every
message the projection may not have written yet, plus the newest `window` of each
conversation, and readers find a message they were acked or pushed here at once
(read-your-writes), whatever the projection's lag.

Per conversation, under the hash tag of its shard (`store.redis.keys.RedisKeys.shard`: the
conversation's Kafka partition among ``hot_shards``; one Redis Cluster slot, so that one
script writes all the conversations of a msg batch):

=====================================  ======  ============================================
key                                    type    holds
=====================================  ======  ============================================
``tl:{c<s>}:<conv>``                   zset    recent messages (encoded), scored by seq
``tm:{c<s>}:<conv>``                   hash    ``floor``: every seq ≥ floor is in ``tl``, every
                                               one below it is in the document store;
                                               ``head``: the highest seq known
``cm:{c<s>}:<conv>:<client_msg_id>``  string  "<seq>:<created_ms>" of a sent message: the
                                               resend dedupe, kept `dedupe_ttl`
``tr:{c<s>}:<conv>``                   hash    seq → revoked message, for messages read from
                                               the document store before it has the revocation
=====================================  ======  ============================================

All but ``cm`` expire after `idle_ttl` without a write; they are written together and expire
together. When a conversation's keys are gone (idle, or a fresh Redis), the document store
answers for it — the projection caught up with an idle conversation long ago.

Dedupe of client_msg_id: `accept` claims ``cm`` with ``SET NX GET`` in the same script that
appends the message, so a message is either new (claimed and appended) or a duplicate whose
original seq and time come back — from ``tl`` while it is there, else from the store. A
resend after `dedupe_ttl` is a new message: that is the documented resend window
(docs/architecture.md).

Reads merge both sides by the floor: seqs at or above it from Redis, below it from the store
(one query, matching the store's ``(conv, seq)`` or ``(conv, client_msg_id)`` index), with
revocations from ``tr`` laid over what the store returned.

A read asks for the messages first and for the floor after them, in one pipeline: a pipeline
is not atomic, and a trim may run between any two of its commands. A trim only ever raises
the floor, so a message the read missed in ``tl`` is below the floor read after it, and the
store has it. Read the other way round, a trim between the two would leave the messages it
dropped neither in ``tl`` nor below the floor the read had: treated as nonexistent.

The in-memory stores of the embedded mode need none of this: they are both sides at once.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from schemas.ids import ConversationId, UserId
from store.messages import (
    InsertResult,
    MessageRef,
    MessageStore,
    SeqConflictError,
    StoredMessage,
)
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.scripts import NO_WAIT, WINDOW_CUT, ReplicaWait, ScriptRunner, ttl_ms

__all__ = [
    "DEFAULT_CONVERSATION_WINDOW",
    "DEFAULT_DEDUPE_TTL",
    "DEFAULT_IDLE_TTL",
    "RedisMessageStore",
    "decode_message",
    "encode_message",
]

#: Messages of a conversation kept in Redis beyond those the projection has not written:
#: ten history pages of 20.
DEFAULT_CONVERSATION_WINDOW: Final = 200
#: How long a conversation's (or a user's) hot state outlives its last write.
DEFAULT_IDLE_TTL: Final = datetime.timedelta(days=7)
#: How long a sent client_msg_id is remembered: a resend within it gets the original
#: server_msg_id back, one after it is stored as a new message.
DEFAULT_DEDUPE_TTL: Final = datetime.timedelta(days=1)
#: How long "this conversation has no message" is believed after the store said so.
EMPTY_TTL: Final = datetime.timedelta(minutes=1)

_Wire = tuple[str, int, str, int, int, int, int, bytes, int, str, int, int, int]
_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(_Wire)


def encode_message(msg: StoredMessage) -> bytes:
    """A message as Redis keeps it: a MessagePack array in `StoredMessage`'s field order
    (deterministic: the same message always encodes to the same bytes)."""
    return _encoder.encode(
        (
            msg.conversation,
            msg.seq,
            msg.client_msg_id,
            msg.from_user_id,
            msg.to_session_id,
            msg.session_type,
            msg.msg_type,
            msg.msg_data,
            msg.created_ms,
            msg.attach,
            msg.sender_client_type,
            msg.revoked_by,
            msg.revoked_ms,
        )
    )


def decode_message(data: bytes) -> StoredMessage:
    """The inverse of `encode_message`."""
    f = _decoder.decode(data)
    return StoredMessage(
        conversation=ConversationId(f[0]),
        seq=f[1],
        client_msg_id=f[2],
        from_user_id=UserId(f[3]),
        to_session_id=f[4],
        session_type=f[5],
        msg_type=f[6],
        msg_data=f[7],
        created_ms=f[8],
        attach=f[9],
        sender_client_type=f[10],
        revoked_by=f[11],
        revoked_ms=f[12],
    )


# Conversations of one shard: KEYS per conversation tl, tm, tr, then one cm key per message;
# ARGV idle ttl ms, dedupe ttl ms, then per conversation the count of its messages and per
# message: seq, created ms, encoded message. Returns per message three values:
#   1, "", ""                      appended
#   0, "<seq>:<created>", member   a duplicate: its original, and its encoding while in tl
#   -1, "", ""                     the seq is taken by another message (single writer broken)
_ACCEPT: Final = """
local out = {}
local k, a = 1, 3
while a <= #ARGV do
  local tl, tm, tr = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
  local n = tonumber(ARGV[a])
  a = a + 1
  local head = tonumber(redis.call('HGET', tm, 'head') or '0')
  local first = nil
  for _ = 1, n do
    local seq, created, member = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    local cm = KEYS[k]
    a, k = a + 3, k + 1
    local prev = redis.call('SET', cm, seq .. ':' .. created, 'NX', 'GET', 'PX', ARGV[2])
    if prev then
      local s = string.match(prev, '^(%d+):')
      local m = redis.call('ZRANGEBYSCORE', tl, s, s, 'LIMIT', 0, 1)
      out[#out + 1] = 0
      out[#out + 1] = prev
      out[#out + 1] = m[1] or ''
    else
      local taken = redis.call('ZRANGEBYSCORE', tl, seq, seq, 'LIMIT', 0, 1)
      if taken[1] then
        redis.call('DEL', cm)
        out[#out + 1] = -1
      else
        redis.call('ZADD', tl, seq, member)
        if not first then first = seq end
        if tonumber(seq) > head then head = tonumber(seq) end
        out[#out + 1] = 1
      end
      out[#out + 1] = ''
      out[#out + 1] = ''
    end
  end
  if first then
    redis.call('HSETNX', tm, 'floor', first)
    redis.call('HSET', tm, 'head', head)
    redis.call('PEXPIRE', tl, ARGV[1])
    redis.call('PEXPIRE', tm, ARGV[1])
    redis.call('PEXPIRE', tr, ARGV[1])
  end
end
return out
"""

# KEYS: tl, tm, tr. ARGV: seq, the current encoding, the revoked encoding, idle ttl ms.
# Replaces the message in tl when it is there as `current`, and records the revoked
# version in tr either way (reads of the store lay it over what they find).
_REVOKE: Final = """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1], 'LIMIT', 0, 1)
if found[1] == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
"""

# KEYS: tm. ARGV: the store's head, ttl ms for a head, ttl ms for a head of 0. Raises the
# cached head to what the store said (never lowers it); an empty conversation is remembered
# briefly (a client may name any conversation in an ack).
_FILL_HEAD: Final = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'head') or '-1')
local head = tonumber(ARGV[1])
if head > cur then
  redis.call('HSET', KEYS[1], 'head', head)
  if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], head == 0 and ARGV[3] or ARGV[2])
  end
end
return 1
"""

# Trims of one shard's conversations (the projection): KEYS per conversation tl, tm; ARGV
# the window, then per conversation the highest seq the store now has. Drops messages the
# store has, beyond the newest `window`, and raises the floor above them. Returns how many.
_TRIM: Final = (
    WINDOW_CUT
    + """
local removed = 0
for c = 0, #KEYS / 2 - 1 do
  local tl, tm = KEYS[2 * c + 1], KEYS[2 * c + 2]
  local limit = window_cut(tl, tonumber(ARGV[c + 2]), tonumber(ARGV[1]))
  if limit then
    local gone = redis.call('ZREMRANGEBYSCORE', tl, '-inf', limit)
    if gone > 0 then
      removed = removed + gone
      local floor = tonumber(redis.call('HGET', tm, 'floor') or '0')
      if limit + 1 > floor then redis.call('HSET', tm, 'floor', limit + 1) end
    end
  end
end
return removed
"""
)


def _bytes(value: bytes | str) -> bytes:
    """A reply as bytes (the client decodes nothing, but its types allow str)."""
    return value if isinstance(value, bytes) else value.encode()


class RedisMessageStore:
    """A `MessageStore` whose writes go to Redis and whose reads merge Redis with `cold`
    (module docstring). `cold` is the document store the projection writes.

    Args:
        redis: the Redis holding hot state.
        cold: the document store behind (read only here).
        keys: the key namespace.
        window: messages per conversation kept beyond what the projection has not written.
        idle_ttl: how long an unwritten conversation's hot state lives.
        dedupe_ttl: how long a sent client_msg_id is remembered (the resend window).
        replicas: the replicas that must acknowledge a write before it returns
            (`store.redis.scripts.ReplicaWait`; ``[redis] wait_replicas``).
    """

    def __init__(
        self,
        redis: RedisClient,
        cold: MessageStore,
        *,
        keys: RedisKeys | None = None,
        window: int = DEFAULT_CONVERSATION_WINDOW,
        idle_ttl: datetime.timedelta = DEFAULT_IDLE_TTL,
        dedupe_ttl: datetime.timedelta = DEFAULT_DEDUPE_TTL,
        replicas: ReplicaWait = NO_WAIT,
    ) -> None:
        if window < 1:
            raise ValueError(f"the hot window holds at least one message, not {window}")
        self._redis = redis
        self.cold = cold
        self._keys = keys or RedisKeys()
        self.window = window
        self._idle_ms = ttl_ms(idle_ttl)
        self._dedupe_ms = ttl_ms(dedupe_ttl)
        self._empty_ms = min(self._idle_ms, ttl_ms(EMPTY_TTL))
        self._accept = ScriptRunner(redis, _ACCEPT, replicas=replicas)
        self._revoke = ScriptRunner(redis, _REVOKE, replicas=replicas)
        self._fill_head = ScriptRunner(redis, _FILL_HEAD)
        self._trim = ScriptRunner(redis, _TRIM)

    # --- writes ----------------------------------------------------------------------------

    async def insert_many(self, messages: Sequence[StoredMessage]) -> list[InsertResult]:
        """Append each new message to its conversation in Redis; a duplicate (its
        client_msg_id seen within the resend window) appends nothing and comes back as first
        stored. One script per shard (`store.redis.keys.RedisKeys.shard`), all in one round
        trip. Raises `SeqConflictError` after the others are appended if a seq was taken."""
        by_conv: dict[ConversationId, list[int]] = {}
        for index, msg in enumerate(messages):
            by_conv.setdefault(msg.conversation, []).append(index)
        # One script per shard (a batch of one partition's conversations is one shard).
        shards: dict[int, tuple[list[str], list[Any], list[ConversationId]]] = {}
        for conv, indexes in by_conv.items():
            keys, args, convs = shards.setdefault(
                self._keys.shard(conv.encode()), ([], [self._idle_ms, self._dedupe_ms], [])
            )
            keys += [
                self._keys.timeline(conv),
                self._keys.timeline_meta(conv),
                self._keys.revocations(conv),
            ]
            args.append(len(indexes))
            for index in indexes:
                msg = messages[index]
                keys.append(self._keys.client_msg(conv, msg.client_msg_id))
                args += [msg.seq, msg.created_ms, encode_message(msg)]
            convs.append(conv)
        calls = [(keys, args) for keys, args, _ in shards.values()]
        answers = await self._accept.run_many(calls)
        results: list[InsertResult | None] = [None] * len(messages)
        conflict: str | None = None
        lookups: list[tuple[int, int, int]] = []  # (index, original seq, original created)
        for (_, _, convs), answer in zip(shards.values(), answers, strict=True):
            order = [(conv, index) for conv in convs for index in by_conv[conv]]
            for k, (conv, index) in enumerate(order):
                status, original, member = answer[3 * k : 3 * k + 3]
                msg = messages[index]
                if status == 1:
                    results[index] = InsertResult(msg, duplicate=False)
                elif status == -1:
                    conflict = conflict or f"seq {msg.seq} of {conv} belongs to another message"
                elif member:
                    results[index] = InsertResult(decode_message(bytes(member)), duplicate=True)
                else:
                    seq, _, created = bytes(original).decode().partition(":")
                    lookups.append((index, int(seq), int(created)))
        if lookups:
            await self._originals(messages, lookups, results)
        if conflict is not None:
            raise SeqConflictError(conflict)
        return [r for r in results if r is not None]

    async def _originals(
        self,
        messages: Sequence[StoredMessage],
        lookups: Sequence[tuple[int, int, int]],
        results: list[InsertResult | None],
    ) -> None:
        """Duplicates whose original left Redis: from the store (one read per conversation),
        else — the projection has not written it and Redis lost it — rebuilt from the resend
        with the original seq and time."""
        by_conv: dict[ConversationId, list[tuple[int, int, int]]] = {}
        for item in lookups:
            by_conv.setdefault(messages[item[0]].conversation, []).append(item)
        convs = list(by_conv)
        found = await asyncio.gather(
            *(self.get_by_seqs(c, [seq for _, seq, _ in by_conv[c]]) for c in convs)
        )
        for conv, stored in zip(convs, found, strict=True):
            by_seq = {m.seq: m for m in stored}
            for index, seq, created in by_conv[conv]:
                original = by_seq.get(seq) or msgspec.structs.replace(
                    messages[index], seq=seq, created_ms=created
                )
                results[index] = InsertResult(original, duplicate=True)

    async def insert(self, message: StoredMessage) -> InsertResult:
        """Append one message (see `insert_many`)."""
        return (await self.insert_many([message]))[0]

    async def mark_revoked(
        self, conversation: ConversationId, seq: int, *, by: UserId, at_ms: int
    ) -> StoredMessage | None:
        """Mark a message revoked in Redis (the store gets it through the log); None when
        there is no such message. The first revocation wins."""
        if at_ms <= 0:
            raise ValueError("a revocation time is a positive ms timestamp")
        found = await self.get_by_seqs(conversation, [seq])
        if not found:
            return None
        msg = found[0]
        if msg.revoked:
            return msg
        revoked = msgspec.structs.replace(msg, revoked_by=by, revoked_ms=at_ms)
        await self._revoke.run(
            [
                self._keys.timeline(conversation),
                self._keys.timeline_meta(conversation),
                self._keys.revocations(conversation),
            ],
            [seq, encode_message(msg), encode_message(revoked), self._idle_ms],
        )
        return revoked

    async def trim(self, upto: dict[ConversationId, int]) -> int:
        """After the projection wrote each conversation's messages up to the given seq:
        drop them from Redis beyond the newest `window` (one script per shard). Returns how
        many were dropped."""
        shards: dict[int, tuple[list[str], list[Any]]] = {}
        for conv, seq in upto.items():
            keys, args = shards.setdefault(self._keys.shard(conv.encode()), ([], [self.window]))
            keys += [self._keys.timeline(conv), self._keys.timeline_meta(conv)]
            args.append(seq)
        return sum(int(n) for n in await self._trim.run_many(list(shards.values())))

    # --- reads -----------------------------------------------------------------------------

    async def _floor(self, conversation: ConversationId) -> int | None:
        value = await self._redis.hget(self._keys.timeline_meta(conversation), "floor")
        return None if value is None else int(value)

    async def _overlay(
        self, conversation: ConversationId, found: list[StoredMessage]
    ) -> list[StoredMessage]:
        """Messages read from the store, with revocations the store may not have yet."""
        if not found:
            return found
        revoked = await self._redis.hmget(
            self._keys.revocations(conversation), [m.seq for m in found]
        )
        return [
            m if r is None else decode_message(_bytes(r))
            for m, r in zip(found, revoked, strict=True)
        ]

    async def get_by_seqs(
        self, conversation: ConversationId, seqs: Iterable[int]
    ) -> list[StoredMessage]:
        """The messages among `seqs`, ascending: Redis for seqs at or above the floor, the
        store (one query) for the others."""
        wanted = sorted(set(seqs))
        if not wanted:
            return []
        key = self._keys.timeline(conversation)
        async with self._redis.pipeline(transaction=False) as pipe:
            for seq in wanted:
                pipe.zrangebyscore(key, seq, seq, start=0, num=1)
            pipe.hget(self._keys.timeline_meta(conversation), "floor")  # after: module docstring
            answers = await pipe.execute()
        floor = None if answers[-1] is None else int(answers[-1])
        hot: list[StoredMessage] = []
        missing: list[int] = []
        for seq, members in zip(wanted, answers[:-1], strict=True):
            if members:
                hot.append(decode_message(members[0]))
            elif floor is None or seq < floor:
                missing.append(seq)
        if not missing:
            return hot
        cold = await self._overlay(conversation, await self.cold.get_by_seqs(conversation, missing))
        return sorted([*hot, *cold], key=lambda m: m.seq)

    async def get_many(self, refs: Iterable[MessageRef]) -> dict[MessageRef, StoredMessage]:
        """The messages among `refs`: one pipelined round trip to Redis, and one query to
        the store for those below their conversation's floor."""
        wanted = list(dict.fromkeys(refs))
        if not wanted:
            return {}
        convs = list(dict.fromkeys(c for c, _ in wanted))
        async with self._redis.pipeline(transaction=False) as pipe:
            for conv, seq in wanted:
                pipe.zrangebyscore(self._keys.timeline(conv), seq, seq, start=0, num=1)
            for conv in convs:  # after the messages: module docstring
                pipe.hget(self._keys.timeline_meta(conv), "floor")
            answers = await pipe.execute()
        floors = {
            c: None if f is None else int(f)
            for c, f in zip(convs, answers[len(wanted) :], strict=True)
        }
        found: dict[MessageRef, StoredMessage] = {}
        missing: list[MessageRef] = []
        for ref, members in zip(wanted, answers[: len(wanted)], strict=True):
            floor = floors[ref[0]]
            if members:
                found[ref] = decode_message(members[0])
            elif floor is None or ref[1] < floor:
                missing.append(ref)
        if missing:
            cold = await self.cold.get_many(missing)
            by_conv: dict[ConversationId, list[StoredMessage]] = {}
            for msg in cold.values():
                by_conv.setdefault(msg.conversation, []).append(msg)
            overlaid = await asyncio.gather(*(self._overlay(c, m) for c, m in by_conv.items()))
            for msgs in overlaid:
                found.update(((m.conversation, m.seq), m) for m in msgs)
        return found

    async def get_by_client_ids(
        self, conversation: ConversationId, client_msg_ids: Iterable[str]
    ) -> list[StoredMessage]:
        """The messages among `client_msg_ids`, ascending: those sent within the resend
        window through their seqs, the others from the store (one query)."""
        ids = list(dict.fromkeys(client_msg_ids))
        if not ids:
            return []
        values = await self._redis.mget([self._keys.client_msg(conversation, i) for i in ids])
        seqs = [int(_bytes(v).split(b":", 1)[0]) for v in values if v is not None]
        unknown = [i for i, v in zip(ids, values, strict=True) if v is None]
        found = await self.get_by_seqs(conversation, seqs) if seqs else []
        if unknown:
            cold = await self.cold.get_by_client_ids(conversation, unknown)
            found = sorted([*found, *await self._overlay(conversation, cold)], key=lambda m: m.seq)
        return found

    async def history(
        self, conversation: ConversationId, end_seq: int, limit: int
    ) -> list[StoredMessage]:
        """The newest `limit` messages below `end_seq` (0: no bound), ascending: from Redis,
        and from the store (one query) for what lies below the floor."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        top: float | str = "+inf" if end_seq <= 0 else f"({end_seq}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrevrangebyscore(
                self._keys.timeline(conversation), top, "-inf", start=0, num=limit
            )
            pipe.hget(self._keys.timeline_meta(conversation), "floor")  # after: module docstring
            members, raw_floor = await pipe.execute()
        hot = [decode_message(m) for m in reversed(members)]
        if len(hot) >= limit:
            return hot
        floor = None if raw_floor is None else int(raw_floor)
        if floor is not None and floor <= 1:
            return hot
        if floor is None:
            cold_end = end_seq
        elif end_seq <= 0 or end_seq > floor:
            cold_end = floor
        else:
            cold_end = end_seq
        if hot and (cold_end <= 0 or cold_end > hot[0].seq):
            # A trim between the two reads raised the floor above messages read from Redis:
            # the store is asked only for what lies below them.
            cold_end = hot[0].seq
        older = await self.cold.history(conversation, cold_end, limit - len(hot))
        return [*await self._overlay(conversation, older), *hot]

    async def latest(self, conversation: ConversationId) -> StoredMessage | None:
        """The newest message, or None."""
        newest = await self.history(conversation, 0, 1)
        return newest[0] if newest else None

    async def latest_seqs(
        self, conversations: Iterable[ConversationId]
    ) -> dict[ConversationId, int]:
        """Each conversation's highest seq: Redis's head, or the store's (then cached)."""
        ordered = list(dict.fromkeys(conversations))
        if not ordered:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for conv in ordered:
                pipe.hget(self._keys.timeline_meta(conv), "head")
            heads = await pipe.execute()
        found = {c: int(h) for c, h in zip(ordered, heads, strict=True) if h is not None}
        missed = [c for c in ordered if c not in found]
        if missed:
            cold = await self.cold.latest_seqs(missed)
            await self._fill_head.run_many(
                [
                    ([self._keys.timeline_meta(c)], [h, self._idle_ms, self._empty_ms])
                    for c, h in cold.items()
                ]
            )
            found.update(cold)
        return {c: found[c] for c in ordered}
