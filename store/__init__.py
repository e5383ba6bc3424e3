"""CoffeeBus storage: MongoDB timelines and users, Redis routes and caches.

Every store is a `typing.Protocol` with an in-memory twin (the embedded mode's store) and a
real implementation; one contract test suite runs against both. Modules come in pairs by
role: ``<thing>.py`` holds the model, the protocol and the in-memory twin, and
``<thing>_mongo.py`` / ``<thing>_redis.py`` the real implementation (``users``, ``routes``,
and the messaging stores beside them).

Shared plumbing:

- ``keys``: every Redis key name (namespaced); ``collections``: every MongoDB collection
  name and index, and the intended shard keys.
- ``mongo`` / ``redis``: client construction, `ensure_indexes`, readiness pings.
- ``passwords``: salted scrypt, off the event loop; ``clock``: wall clock and a manual
  clock for tests; ``ids`` and ``errors``: id types and the store's exceptions.
"""
