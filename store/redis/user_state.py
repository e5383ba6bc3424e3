"""Users' hot state in Redis: the keys, the scripts and the helpers its stores share.

The stores are `store.redis.inbox.RedisInboxStore`, `store.redis.sessions.RedisSessionStore`
and `store.redis.deliveries.RedisDeliveryStore`; this module says what they keep and how.


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
append adds its message to ``ur`` only if it counts (`store.inbox.counts_as_unread`: someone
else's, not a notification or a tip) and is above the read
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

import datetime
from collections.abc import Callable, Iterable
from typing import Any, Final

from store.inbox import counts_as_unread
from store.messages import StoredMessage
from store.redis.keys import RedisKeys
from store.redis.messages import DEFAULT_IDLE_TTL, decode_message, encode_message

__all__ = [
    "APPEND",
    "DEFAULT_IDLE_TTL",
    "DEFAULT_INBOX_WINDOW",
    "DELIVER",
    "FILL_HEAD",
    "LIST",
    "READ",
    "REPAIR",
    "REPAIR_SESSIONS",
    "TOUCH",
    "TRIM",
    "UserKeys",
    "by_user",
    "counts_as_unread",
    "last_from",
    "last_value",
    "pad",
    "ttl_ms",
]

DEFAULT_INBOX_WINDOW: Final = 1000
#: Sessions a repair takes from the store (the most recently changed).
REPAIR_SESSIONS: Final = 1000


def pad(seq: int) -> str:
    """A seq as ``ur`` orders it: 20 digits, so lex order is numeric order."""
    return f"{seq:020d}"


# Every user script gets KEYS = ib, im, ss, sl, rd, ur, dl and ARGV[1] = the TTL in ms, and
# ends by refreshing the TTL of every key that exists.
EXPIRE: Final = """
for k = 1, 7 do redis.call('PEXPIRE', KEYS[k], ARGV[1]) end
"""

# ARGV[2..]: per entry 5 values: inbox seq, conv, seq, 20-digit seq, counts (1/0). Returns per
# entry its inbox seq if appended now, minus the original's if it is in ib, 0 if it left ib.
APPEND: Final = (
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
    + EXPIRE
    + "return out"
)

# ARGV[2..]: per touch 4 values: conv, seq, time ms, "<seq>|<message>".
TOUCH: Final = (
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
    + EXPIRE
    + "return 1"
)

# ARGV[2] now ms; ARGV[3..]: per mark 3 values: conv, seq, 20-digit seq. Returns each
# session's read seq from before the mark.
READ: Final = (
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
    + EXPIRE
    + "return out"
)

# ARGV[2..]: per mark 2 values: conv, seq.
DELIVER: Final = (
    """
for i = 2, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > tonumber(redis.call('HGET', KEYS[7], ARGV[i]) or '0') then
    redis.call('HSET', KEYS[7], ARGV[i], ARGV[i + 1])
  end
end
"""
    + EXPIRE
    + "return 1"
)

# ARGV[2] after ms, ARGV[3] limit, ARGV[4] a conversation or "" (then all). Returns #init
# ("" if unset), then per session with a last message (or the one named, with or without),
# newest first: conv, time, last ("" if none), read seq, unread count.
LIST: Final = """
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
REPAIR: Final = (
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
    + EXPIRE
    + "return 1"
)

# KEYS: ib, im. ARGV: the highest inbox seq the store now has, the window. Drops entries the
# store has, beyond the newest `window`; remembers per conversation the highest seq dropped
# (the dedupe of entries that left) and raises the floor.
TRIM: Final = """
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
FILL_HEAD: Final = """
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


def ttl_ms(ttl: datetime.timedelta) -> int:
    if ttl <= datetime.timedelta(0):
        raise ValueError("a TTL must be positive")
    return max(1, round(ttl.total_seconds() * 1000))


def by_user(items: Iterable[Any], user_of: Callable[[Any], int]) -> dict[int, list[int]]:
    """Indexes of `items` grouped by user, users in first-seen order."""
    groups: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(user_of(item), []).append(index)
    return groups


def last_value(msg: StoredMessage) -> bytes:
    return b"%d|" % msg.seq + encode_message(msg)


def last_from(value: bytes) -> StoredMessage:
    return decode_message(value[value.index(b"|") + 1 :])
