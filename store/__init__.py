"""CoffeeBus storage as ports and adapters: MongoDB timelines and users, Redis routes and caches.

``store/<thing>.py`` is the port: the model, the `typing.Protocol` every implementation
satisfies, and the pure helpers they share. The adapters live beside it, one package per
technology, one module per thing:

- ``memory/<thing>.py``: the in-memory twin (the embedded mode's store; one contract test
  suite runs it and the real adapter side by side);
- ``mongo/<thing>.py``: the MongoDB implementation, with its plumbing — ``client``
  (connect, database, `ensure_indexes`, ping), ``collections`` (every collection, index and
  intended shard key), ``bulk`` (idempotent bulk writes), ``errors`` (which driver errors
  are transient) and ``compat`` (the FerretDB v1 workarounds, chosen by ``[mongo] server``);
- ``redis/<thing>.py``: the Redis implementations and caches (routes, timeline heads, the
  group and token caches, idempotency keys), with ``client``, ``keys`` (every Redis key
  name) and ``errors``.

Dependencies point inwards: an adapter imports ports and its own package's plumbing. The one
adapter that uses another, `store.mongo.users.MongoUserStore` building its
`store.redis.users.RedisTokenCache`, does so to keep its constructor as it was. The rest of the
top level: ``passwords`` (salted scrypt, off the event loop), ``clock`` (wall clock and a
manual clock for tests), ``ids`` and ``errors`` (id types and the store's exceptions).
"""
