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
``<ns>head:<conversation>``        string  a conversation's highest stored seq
                                           (`store.redis.heads`); TTL refreshed on write
``<ns>inbox:<user_id>:head``       string  a user's highest stored inbox seq
                                           (`store.redis.heads`); TTL refreshed on write
``<ns>rl:<scope>:<id>``            —       rate-limit buckets
``<ns>idem:<scope>``               string  an ``Idempotency-Key``'s request fingerprint and
                                           response (`store.idempotency`); TTL
=================================  ======  ==============================================

Redis Cluster: the gate registry keys share the ``{gates}`` hash tag so that the registry's
multi-key operations stay in one slot. Per-user, per-group and per-conversation keys carry no
tag and spread over a cluster: the timeline-head cache reads and writes many of them in one
pipeline of single-key commands, never a multi-key command; the one place that reads many
users' keys in a single script (`store.redis.routes.RedisRouteStore.get_many`) has a
pipelined mode for a cluster.
"""

from __future__ import annotations

import msgspec

DEFAULT_NAMESPACE = "cb:"

# Hash tags and glob characters in a namespace would move keys between cluster slots or make
# `RedisKeys.pattern` match other namespaces.
_FORBIDDEN_IN_NAMESPACE = frozenset("{}*?[]\\")


class RedisKeys(msgspec.Struct, frozen=True):
    """Builds the Redis keys of one namespace."""

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if any(ch.isspace() or ch in _FORBIDDEN_IN_NAMESPACE for ch in self.namespace):
            raise ValueError(
                f"Redis key namespace {self.namespace!r} must not contain whitespace, "
                "hash-tag braces or glob characters"
            )

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

    def group_members(self, group_id: int) -> str:
        """Cache of a group and its member set (hash, see `store.redis.groups`)."""
        return f"{self.namespace}group:{group_id}:members"

    def conversation_head(self, conversation: str) -> str:
        """Cache of a conversation's highest stored seq (see `store.redis.heads`)."""
        return f"{self.namespace}head:{conversation}"

    def inbox_head(self, user_id: int) -> str:
        """Cache of a user's highest stored inbox seq (see `store.redis.heads`)."""
        return f"{self.namespace}inbox:{user_id}:head"

    def rate_limit(self, scope: str, ident: str | int) -> str:
        """Rate-limit state of one subject (a connection, a user, an API key) in a scope."""
        return f"{self.namespace}rl:{scope}:{ident}"

    def idempotency(self, scope: str) -> str:
        """An HTTP API idempotency key's record (scope: a digest of API key + header)."""
        return f"{self.namespace}idem:{scope}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace (for tests and tooling)."""
        return f"{self.namespace}*"
