"""Every Redis key CoffeeBus uses, built in one place.

All keys start with a namespace (``cb:`` by default) so that several deployments — or several
tests running at once — can share one Redis server without seeing each other's data. Code
never writes a key literal elsewhere: it asks a `RedisKeys` for it.

=================================  ======  ==============================================
key                                type    holds
=================================  ======  ==============================================
``<ns>route:<user_id>``            hash    client type → route of that device (gate, conn,
                                           login time); TTL refreshed by heartbeats
``<ns>user:<user_id>``             hash    token-check cache of a user: ``rev`` (the Mongo
                                           document revision) and ``user`` (encoded user
                                           without password hash, or empty = no such user)
``<ns>{gates}:load``               zset    gate id scored by its connection count
``<ns>{gates}:gate:<gate_id>``     string  the gate's addresses and load; TTL = liveness
``<ns>group:<group_id>:members``   hash    group cache: ``#v`` version, ``#g`` group, one
                                           field per member id (`store.redis.groups`); TTL
``<ns>tl:{c<s>}:<conv>``           zset    a conversation's recent messages by seq
``<ns>tm:{c<s>}:<conv>``           hash    its ``floor`` and ``head`` (`store.redis.messages`)
``<ns>cm:{c<s>}:<conv>:<cmid>``    string  a sent message's seq and time: the resend dedupe
``<ns>tr:{c<s>}:<conv>``           hash    its recently revoked messages, seq → message
``<ns>ib:{u<s>}:<id>``, ``ss``,    —       a user's hot state: inbox, session order, unread
``ur``, ``uh``                             messages, and a hash of the rest
                                           (`store.redis.user_state`); TTL refreshed together
``<ns>rl:<scope>:<id>``            —       rate-limit buckets
``<ns>call:<channel>``             hash    a call (`store.redis.calls`); TTL
``<ns>incall:<user_id>``           string  the channel of the user's call (busy, heartbeat);
                                           TTL refreshed by the user's heartbeats
``<ns>calls:due``                  zset    live calls' channels by next deadline (the call
                                           group's sweep)
``<ns>idem:<scope>``               string  an ``Idempotency-Key``'s request fingerprint and
                                           response (`store.idempotency`); TTL
``<ns>room:{r<id>}:m``             hash    a chat room: ``r`` the room, ``c`` closed time,
                                           ``s`` last msg id given, ``h`` last one kept
                                           (`store.redis.rooms`); TTL once closed
``<ns>room:{r<id>}:g``             hash    gate id → its connections in the room
``<ns>room:{r<id>}:h``             list    the room's recent window, RoomMsg bodies
``<ns>room:{r<id>}:s:<user_id>``   string  slow mode: the user's next send is refused; TTL
``<ns>rooms:open``                 zset    open room ids (score = id), for listing
``<ns>rooms:next-id``              string  the last room id handed out
``<ns>roomgate:<gate_id>``         set     rooms a gate has (had) members in
=================================  ======  ==============================================

Redis Cluster: the gate registry keys share the ``{gates}`` hash tag so that the registry's
multi-key operations stay in one slot, and so do the hot-state keys of one shard of
conversations (``{c<s>}``) and of users (``{u<s>}``): a shard is the Kafka partition of the
timelines' key among ``hot_shards`` (`RedisKeys.shard`), so every script touches one shard,
one slot, and a handler batch — one partition's timelines — writes one shard. Different
shards spread over a cluster: stores read and write many of them in one pipeline of
single-slot commands, never a multi-slot command; the one place that reads many
users' keys in a single script (`store.redis.routes.RedisRouteStore.get_many`) uses a
pipeline instead on a cluster client. `make test-redis-cluster` runs every Redis test on a
real cluster, where a command across slots fails (docs/operations.md, "Redis Cluster").
"""

from __future__ import annotations

import msgspec

from bus.partitioner import partition_for_key

DEFAULT_NAMESPACE = "cb:"
#: The hot state's shards: the partitions of topology.yaml's hot topics, so that one handler
#: batch writes one shard.
DEFAULT_HOT_SHARDS = 16

# Hash tags and glob characters in a namespace would move keys between cluster slots or make
# `RedisKeys.pattern` match other namespaces.
_FORBIDDEN_IN_NAMESPACE = frozenset("{}*?[]\\")


class RedisKeys(msgspec.Struct, frozen=True):
    """Builds the Redis keys of one namespace (and the hot state's shards, `shard`)."""

    namespace: str = DEFAULT_NAMESPACE
    hot_shards: int = DEFAULT_HOT_SHARDS

    def __post_init__(self) -> None:
        if any(ch.isspace() or ch in _FORBIDDEN_IN_NAMESPACE for ch in self.namespace):
            raise ValueError(
                f"Redis key namespace {self.namespace!r} must not contain whitespace, "
                "hash-tag braces or glob characters"
            )
        if self.hot_shards < 1:
            raise ValueError(f"hot_shards must be at least 1, not {self.hot_shards}")

    def route(self, user_id: int) -> str:
        """Hash of a user's device routes, field = client type."""
        return f"{self.namespace}route:{user_id}"

    def user_cache(self, user_id: int) -> str:
        """Hash caching what a token check needs of a user."""
        return f"{self.namespace}user:{user_id}"

    def gate_load(self) -> str:
        """Sorted set of registered gates by connection count."""
        return f"{self.namespace}{{gates}}:load"

    def gate(self, gate_id: str) -> str:
        """A live gate's record; it expires when the gate stops heartbeating."""
        return f"{self.namespace}{{gates}}:gate:{gate_id}"

    def call(self, channel: str) -> str:
        """Hash of one call (`store.redis.calls`)."""
        return f"{self.namespace}call:{channel}"

    def call_claim(self, user_id: int) -> str:
        """The channel of the call a user is in."""
        return f"{self.namespace}incall:{user_id}"

    def call_deadlines(self) -> str:
        """Sorted set of live calls' channels, scored by when the sweep must look next."""
        return f"{self.namespace}calls:due"

    def group_members(self, group_id: int) -> str:
        """Cache of a group and its member set (hash, see `store.redis.groups`)."""
        return f"{self.namespace}group:{group_id}:members"

    # --- hot state (store.redis.messages, store.redis.user_state) ---------------------------
    #
    # Every timeline's keys carry the hash tag of its *shard* — the Kafka partition its key
    # maps to, over `hot_shards` partitions (`shard`) — not of the timeline itself: a
    # handler batch holds the timelines of one partition, so with `hot_shards` dividing the
    # partition counts of im.up.msg, im.fanout and im.up.ack, one batch writes one shard in
    # one script (one Redis Cluster slot), whatever the number of users or conversations.

    def shard(self, key: bytes) -> int:
        """The hot-state shard of a timeline with Kafka key `key` (conversation id or user
        id in decimal): its partition among `hot_shards`, by the Java client's rule."""
        return partition_for_key(key, self.hot_shards)

    def conversation_tag(self, conversation: str) -> str:
        """The hash tag of a conversation's hot-state keys."""
        return f"{{c{self.shard(conversation.encode())}}}"

    def user_tag(self, user_id: int) -> str:
        """The hash tag of a user's hot-state keys."""
        return f"{{u{self.shard(b'%d' % user_id)}}}"

    def timeline(self, conversation: str) -> str:
        """Sorted set of a conversation's recent messages, scored by seq."""
        return f"{self.namespace}tl:{self.conversation_tag(conversation)}:{conversation}"

    def timeline_meta(self, conversation: str) -> str:
        """Hash of a conversation's hot-state bounds: ``floor``, ``head``."""
        return f"{self.namespace}tm:{self.conversation_tag(conversation)}:{conversation}"

    def client_msg(self, conversation: str, client_msg_id: str) -> str:
        """A sent client_msg_id's seq and time (the resend window's dedupe)."""
        tag = self.conversation_tag(conversation)
        return f"{self.namespace}cm:{tag}:{conversation}:{client_msg_id}"

    def revocations(self, conversation: str) -> str:
        """Hash of a conversation's recently revoked messages, seq → message."""
        return f"{self.namespace}tr:{self.conversation_tag(conversation)}:{conversation}"

    def inbox(self, user_id: int) -> str:
        """Sorted set of a user's recent inbox entries ("<conv>|<seq>"), scored by inbox seq."""
        return f"{self.namespace}ib:{self.user_tag(user_id)}:{user_id}"

    def session_order(self, user_id: int) -> str:
        """Sorted set of a user's conversations, scored by last change (ms)."""
        return f"{self.namespace}ss:{self.user_tag(user_id)}:{user_id}"

    def unread(self, user_id: int) -> str:
        """Sorted set (by lex) of a user's unread messages, "<conv>|<20-digit seq>"."""
        return f"{self.namespace}ur:{self.user_tag(user_id)}:{user_id}"

    def user_state(self, user_id: int) -> str:
        """Hash of the rest of a user's hot state: bounds and flags (``#head``, ``#floor``,
        ``#init``), and per conversation ``l:`` last message, ``r:`` read seq, ``d:``
        delivered seq, ``t:`` highest seq trimmed from the inbox (`store.redis.user_state`)."""
        return f"{self.namespace}uh:{self.user_tag(user_id)}:{user_id}"

    def rate_limit(self, scope: str, ident: str | int) -> str:
        """Rate-limit state of one subject (a connection, a user, an API key) in a scope."""
        return f"{self.namespace}rl:{scope}:{ident}"

    def idempotency(self, scope: str) -> str:
        """An HTTP API idempotency key's record (scope: a digest of API key + header)."""
        return f"{self.namespace}idem:{scope}"

    # --- chat rooms (store.redis.rooms): one hash tag per room ------------------------------

    def room_meta(self, room_id: int) -> str:
        """Hash of a room: ``r`` the room, ``c`` closed time, ``s`` / ``h`` msg ids."""
        return f"{self.namespace}room:{{r{room_id}}}:m"

    def room_gates(self, room_id: int) -> str:
        """Hash of a room's presence: gate id → connections of that gate in the room."""
        return f"{self.namespace}room:{{r{room_id}}}:g"

    def room_recent(self, room_id: int) -> str:
        """List of a room's newest messages (encoded RoomMsg), oldest first."""
        return f"{self.namespace}room:{{r{room_id}}}:h"

    def room_slow(self, room_id: int, user_id: int) -> str:
        """Present while `user_id` must wait before its next message in the room."""
        return f"{self.namespace}room:{{r{room_id}}}:s:{user_id}"

    def rooms_open(self) -> str:
        """Sorted set of open room ids."""
        return f"{self.namespace}rooms:open"

    def room_next_id(self) -> str:
        """Counter of room ids."""
        return f"{self.namespace}rooms:next-id"

    def gate_rooms(self, gate_id: str) -> str:
        """Set of rooms a gate counted members in (for its restart)."""
        return f"{self.namespace}roomgate:{gate_id}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace (for tests and tooling)."""
        return f"{self.namespace}*"
