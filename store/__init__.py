"""CoffeeBus storage as ports and adapters: MongoDB timelines and users, Redis routes and caches.

``store/<thing>.py`` is the port: the model, the `typing.Protocol` every implementation
satisfies, and the pure helpers they share. The adapters live beside it, one package per
technology, one module per thing:

- ``memory/<thing>.py``: the in-memory twin (the embedded mode's store; one contract test
  suite runs it and the real adapter side by side);
- ``mongo/<thing>.py``: the MongoDB implementation, with its plumbing — ``client``
  (connect, database, `ensure_indexes`, ping), ``collections`` (every collection, index and
  intended shard key) and ``bulk`` (idempotent bulk writes);
- ``redis/<thing>.py``: the Redis implementations and caches (routes, timeline heads, the
  group and token caches, idempotency keys), with ``client`` and ``keys`` (every Redis key
  name).

Dependencies point inwards: an adapter imports its port, never another port's adapter but
through the port (the one exception, `store.mongo.users.MongoUserStore` building its
`store.redis.users.RedisTokenCache`, keeps its constructor as it was). The rest of the
top level: ``passwords`` (salted scrypt, off the event loop), ``clock`` (wall clock and a
manual clock for tests), ``ids`` and ``errors`` (id types and the store's exceptions).
"""
