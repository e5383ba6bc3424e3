"""Users' hot state in Redis: the keys, the scripts and the helpers its stores share.

The stores are `store.redis.inbox.RedisInboxStore`, `store.redis.sessions.RedisSessionStore`,
`store.redis.deliveries.RedisDeliveryStore` and `store.redis.timelines.RedisUserTimelines`;
this module says what they keep and how.

The fanout group appends inbox entries and moves sessions here (and logs them to
``im.log.user``) before it delivers anything; the ack group moves read and delivery marks
here (and logs them). The ``projection`` group writes the log into the document store and
then trims inboxes in Redis. So a user's recent inbox, every session with its last message,
read seq and exact unread count, and the delivery marks are answered from Redis, whatever
the projection's lag (read-your-writes).

Per user, four keys under the hash tag of the user's shard (`store.redis.keys.RedisKeys.shard`:
the user's Kafka partition among ``hot_shards``), refreshed together by every write so that
they expire together after `idle_ttl` without one:

=====================  ======  ===============================================================
key                    type    holds
=====================  ======  ===============================================================
``ib:{u<s>}:<id>``     zset    recent inbox entries "<conv>|<seq>", scored by inbox seq
``ss:{u<s>}:<id>``     zset    conversations scored by their last change (ms)
``ur:{u<s>}:<id>``     zset    unread messages "<conv>|<seq, 20 digits>" (all scores 0: by lex)
``uh:{u<s>}:<id>``     hash    ``#head`` (highest inbox seq), ``#floor`` (every inbox seq ≥ it
                               is in ``ib``, every one below in the store), ``#fresh`` (the
                               floor, while the store may still lack entries below it),
                               ``#init`` (the sessions here are complete), and per
                               conversation ``l:<conv>``
                               "<seq>|<last message>", ``r:<conv>`` read seq, ``d:<conv>``
                               highest seq a device acked, ``t:<conv>`` highest seq trimmed
                               from ``ib`` (the entries' dedupe once they left)
=====================  ======  ===============================================================

A handler batch holds the users of one Kafka partition, so with ``hot_shards`` dividing the
partition counts it writes one shard: one script call for the whole batch, looping over its
users (`user_calls`). Every script here takes a list of users — ``KEYS`` four per user, in
the order above — and ``ARGV`` the TTL in ms, then per user the count of its items and the
items.

Unread counts stay exact across seq gaps and any interleaving of fan-out and read acks: an
append adds its message to ``ur`` only if it counts (`store.inbox.counts_as_unread`: someone
else's, not a notification or a tip) and is above the read
seq, a read removes everything up to it, each in one script on the user's slot, and a count
is a ``ZLEXCOUNT`` of the conversation's range.

Fresh floors (``#fresh``): a writer that creates a user's inbox keys sets the floor at the
first entry it appends, and cannot know whether the store has every entry below it yet — it
has not when Redis lost entries the projection had not written. It marks the floor fresh
until the projection writes an entry at or above it (`TRIM`), which it does only after every
earlier entry of the user's log; a sync that needs the store's side below a fresh floor gets
an empty page with ``has_more`` meanwhile (`store.redis.inbox.RedisInboxStore.after`), rather
than a page with a hole that would move the device past what it misses.

Completeness (``#init``): writers create a user's keys from nothing when they are gone — a new
user, one idle past the TTL, a Redis that lost its data — and cannot know what the document
store holds from before. The first read of such a user merges the store's sessions, read seqs
and unread messages in (`RedisSessionStore.repair`: two queries, once per user and hot-state
lifetime), then marks it complete. Everything merged is a max or a union, so a repair racing
with writers loses nothing. After a Redis that lost data, what the projection had not yet
written is missing from such a repair: counts can stay low for those messages
(docs/operations.md, "Backups and what each store holds").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

from store.inbox import counts_as_unread
from store.messages import StoredMessage
from store.redis.keys import RedisKeys
from store.redis.messages import DEFAULT_IDLE_TTL, decode_message, encode_message
from store.redis.scripts import WINDOW_CUT, Call, ttl_ms

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
    "counts_as_unread",
    "last_from",
    "last_value",
    "pad",
    "ttl_ms",
    "user_calls",
]

DEFAULT_INBOX_WINDOW: Final = 1000
#: Sessions a repair takes from the store (the most recently changed).
REPAIR_SESSIONS: Final = 1000


def pad(seq: int) -> str:
    """A seq as ``ur`` orders it: 20 digits, so lex order is numeric order."""
    return f"{seq:020d}"


# The frame of every multi-user write script: `BODY` runs once per item of a user with
# `ib`, `ss`, `ur`, `uh` bound to its keys and `a` pointing at the item's first ARGV, and
# must advance `a` past it; `BEFORE` and `AFTER` run once per user around its items. The
# user's four keys get the TTL in ARGV[1] after them. Results go to `out`.
def _per_user(body: str, *, before: str = "", after: str = "", first_arg: int = 2) -> str:
    return f"""
local out = {{}}
local a = {first_arg}
for u = 0, #KEYS / 4 - 1 do
  local ib, ss, ur, uh = KEYS[4 * u + 1], KEYS[4 * u + 2], KEYS[4 * u + 3], KEYS[4 * u + 4]
  local n = tonumber(ARGV[a])
  a = a + 1
  {before}
  for _ = 1, n do
    {body}
  end
  {after}
  redis.call('PEXPIRE', ib, ARGV[1])
  redis.call('PEXPIRE', ss, ARGV[1])
  redis.call('PEXPIRE', ur, ARGV[1])
  redis.call('PEXPIRE', uh, ARGV[1])
end
return out
"""


# Inbox append, with the session touch when an item carries a last message (the fanout
# group's one write per entry). Per item 7 values: inbox seq, conv, seq, 20-digit seq,
# counts (1/0), time ms, "<seq>|<message>" or "" (no touch). Per item it returns its inbox
# seq if appended now, minus the original's if it is in ib, 0 if it left ib.
APPEND: Final = _per_user(
    before="""
  local head = tonumber(redis.call('HGET', uh, '#head') or '0')
  local first = nil
""",
    body="""
    local iseq, conv, seq = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
    local ref = conv .. '|' .. ARGV[a + 2]
    local have = redis.call('ZSCORE', ib, ref)
    if have then
      out[#out + 1] = -tonumber(have)
    elseif seq <= tonumber(redis.call('HGET', uh, 't:' .. conv) or '0') then
      out[#out + 1] = 0
    else
      redis.call('ZADD', ib, iseq, ref)
      if ARGV[a + 4] == '1' and seq > tonumber(redis.call('HGET', uh, 'r:' .. conv) or '0') then
        redis.call('ZADD', ur, 0, conv .. '|' .. ARGV[a + 3])
      end
      if tonumber(iseq) > head then head = tonumber(iseq) end
      if not first then first = iseq end
      out[#out + 1] = tonumber(iseq)
    end
    local last = ARGV[a + 6]
    if last ~= '' then
      local cur = redis.call('HGET', uh, 'l:' .. conv)
      if not cur or tonumber(string.match(cur, '^(%d+)|')) < seq then
        redis.call('HSET', uh, 'l:' .. conv, last)
      end
      redis.call('ZADD', ss, 'GT', ARGV[a + 5], conv)
    end
    a = a + 7
""",
    after="""
  if first then
    if redis.call('HSETNX', uh, '#floor', first) == 1 then
      redis.call('HSET', uh, '#fresh', first)
    end
    redis.call('HSET', uh, '#head', head)
  end
""",
)

# Session touch. Per item 4 values: conv, seq, time ms, "<seq>|<message>".
TOUCH: Final = _per_user(
    body="""
    local conv, seq = ARGV[a], tonumber(ARGV[a + 1])
    local cur = redis.call('HGET', uh, 'l:' .. conv)
    if not cur or tonumber(string.match(cur, '^(%d+)|')) < seq then
      redis.call('HSET', uh, 'l:' .. conv, ARGV[a + 3])
    end
    redis.call('ZADD', ss, 'GT', ARGV[a + 2], conv)
    a = a + 4
"""
)

# Read marks. ARGV[2] now ms; per item 3 values: conv, seq, 20-digit seq. Per item it
# returns the session's read seq from before it.
READ: Final = _per_user(
    first_arg=3,
    body="""
    local conv, seq = ARGV[a], tonumber(ARGV[a + 1])
    local prev = tonumber(redis.call('HGET', uh, 'r:' .. conv) or '0')
    out[#out + 1] = prev
    if seq > prev then
      redis.call('HSET', uh, 'r:' .. conv, ARGV[a + 1])
      redis.call('ZREMRANGEBYLEX', ur, '[' .. conv .. '|', '[' .. conv .. '|' .. ARGV[a + 2])
      redis.call('ZADD', ss, 'GT', ARGV[2], conv)
    end
    a = a + 3
""",
)

# Delivery marks. Per item 2 values: conv, seq.
DELIVER: Final = _per_user(
    body="""
    local field = 'd:' .. ARGV[a]
    if tonumber(ARGV[a + 1]) > tonumber(redis.call('HGET', uh, field) or '0') then
      redis.call('HSET', uh, field, ARGV[a + 1])
    end
    a = a + 2
"""
)

# Inbox trims (the projection). ARGV[2] the window; per user 1 item: the highest inbox seq
# the store now has. Clears #fresh once that reaches it; drops entries the store has, beyond
# the newest `window`; remembers per conversation the highest seq dropped (the dedupe of
# entries that left) and raises the floor. Returns per user how many it dropped.
TRIM: Final = WINDOW_CUT + _per_user(
    first_arg=3,
    body="""
    local fresh = redis.call('HGET', uh, '#fresh')
    if fresh and tonumber(ARGV[a]) >= tonumber(fresh) then redis.call('HDEL', uh, '#fresh') end
    local limit = window_cut(ib, tonumber(ARGV[a]), tonumber(ARGV[2]))
    local gone = {}
    if limit then gone = redis.call('ZRANGEBYSCORE', ib, '-inf', limit) end
    for _, ref in ipairs(gone) do
      local conv, seq = string.match(ref, '^(.*)|(%d+)$')
      if tonumber(seq) > tonumber(redis.call('HGET', uh, 't:' .. conv) or '0') then
        redis.call('HSET', uh, 't:' .. conv, seq)
      end
    end
    if #gone > 0 then
      redis.call('ZREMRANGEBYSCORE', ib, '-inf', limit)
      if limit + 1 > tonumber(redis.call('HGET', uh, '#floor') or '0') then
        redis.call('HSET', uh, '#floor', limit + 1)
      end
    end
    out[#out + 1] = #gone
    a = a + 1
""",
)

# One user's session list: KEYS ib, ss, ur, uh; ARGV[1] after ms, ARGV[2] limit, ARGV[3] a
# conversation or "" (then all). Returns #init ("" if unset), then per session with a last
# message (or the one named, with or without), newest first: conv, time, last ("" if none),
# read seq, unread count.
LIST: Final = """
local ss, ur, uh = KEYS[2], KEYS[3], KEYS[4]
local out = {redis.call('HGET', uh, '#init') or ''}
local limit = tonumber(ARGV[2])
local function add(conv, score, bare)
  local last = redis.call('HGET', uh, 'l:' .. conv)
  if not last and not bare then return false end
  out[#out + 1] = conv
  out[#out + 1] = score
  out[#out + 1] = last or ''
  out[#out + 1] = redis.call('HGET', uh, 'r:' .. conv) or '0'
  out[#out + 1] = redis.call('ZLEXCOUNT', ur, '[' .. conv .. '|', '(' .. conv .. '}')
  return true
end
if ARGV[3] ~= '' then
  local score = redis.call('ZSCORE', ss, ARGV[3])
  if score then add(ARGV[3], score, true) end
  return out
end
local got, offset = 0, 0
while got < limit do
  local page = redis.call('ZREVRANGEBYSCORE', ss, '+inf', '(' .. ARGV[1],
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

# One user's repair: KEYS ib, ss, ur, uh; ARGV[1] ttl ms, ARGV[2] number of sessions; then
# per session 5 values: conv, time ms, "<seq>|<message>" or "", read seq, 20-digit read seq;
# then per unread message 2 values: conv, 20-digit seq. Merges the store's view in (max and
# union), then marks the user complete.
REPAIR: Final = """
local ib, ss, ur, uh = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n = tonumber(ARGV[2])
local i = 3
for s = 1, n do
  local conv, value, read = ARGV[i], ARGV[i + 2], tonumber(ARGV[i + 3])
  redis.call('ZADD', ss, 'GT', ARGV[i + 1], conv)
  if value ~= '' then
    local cur = redis.call('HGET', uh, 'l:' .. conv)
    local seq = tonumber(string.match(value, '^(%d+)|'))
    if not cur or tonumber(string.match(cur, '^(%d+)|')) < seq then
      redis.call('HSET', uh, 'l:' .. conv, value)
    end
  end
  if read > tonumber(redis.call('HGET', uh, 'r:' .. conv) or '0') then
    redis.call('HSET', uh, 'r:' .. conv, ARGV[i + 3])
    redis.call('ZREMRANGEBYLEX', ur, '[' .. conv .. '|', '[' .. conv .. '|' .. ARGV[i + 4])
  end
  i = i + 5
end
while i < #ARGV do
  local conv, digits = ARGV[i], ARGV[i + 1]
  if tonumber(digits) > tonumber(redis.call('HGET', uh, 'r:' .. conv) or '0') then
    redis.call('ZADD', ur, 0, conv .. '|' .. digits)
  end
  i = i + 2
end
redis.call('HSET', uh, '#init', 1)
for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[1]) end
return 1
"""

# KEYS uh; ARGV the store's inbox head, ttl ms. A user without hot inbox entries learnt its
# head from the store: raise #head to it. The floor is not put above it: keys that are gone
# may have been lost with entries the projection has not written yet (a Redis that lost its
# data), and a floor above the store's head would hide them once it has. Only a writer sets
# the floor, at the first entry it appends (APPEND).
FILL_HEAD: Final = """
local head = tonumber(ARGV[1])
if head > tonumber(redis.call('HGET', KEYS[1], '#head') or '-1') then
  redis.call('HSET', KEYS[1], '#head', head)
end
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class UserKeys:
    """The four keys of a user's hot state, in the order the scripts take them."""

    def __init__(self, keys: RedisKeys) -> None:
        self.keys = keys

    def all(self, user_id: int) -> list[str]:
        """ib, ss, ur, uh."""
        k = self.keys
        return [
            k.inbox(user_id),
            k.session_order(user_id),
            k.unread(user_id),
            k.user_state(user_id),
        ]


_T = TypeVar("_T")


def user_calls(
    keys: RedisKeys,
    items: Sequence[_T],
    user_of: Callable[[_T], int],
    args_of: Callable[[_T], Iterable[Any]],
    head: Sequence[Any],
) -> tuple[list[Call], list[list[int]]]:
    """One script call per shard for `items` (users in first-seen order, each user's items
    in order): the calls, and for each call the indexes of `items` its results answer, in
    result order. `head` is the ARGV before the users (the TTL first)."""
    users: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        users.setdefault(user_of(item), []).append(index)
    shards: dict[int, tuple[list[str], list[Any], list[int]]] = {}
    user_keys = UserKeys(keys)
    for user, indexes in users.items():
        call_keys, args, order = shards.setdefault(keys.shard(b"%d" % user), ([], list(head), []))
        call_keys += user_keys.all(user)
        args.append(len(indexes))
        for index in indexes:
            args += args_of(items[index])
        order += indexes
    calls: list[Call] = [(k, a) for k, a, _ in shards.values()]
    return calls, [order for _, _, order in shards.values()]


def last_value(msg: StoredMessage) -> bytes:
    """A session's last message as ``l:<conv>`` holds it: its seq, "|", the message."""
    return b"%d|" % msg.seq + encode_message(msg)


def last_from(value: bytes) -> StoredMessage:
    """The inverse of `last_value`."""
    return decode_message(value[value.index(b"|") + 1 :])
