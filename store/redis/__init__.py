"""The Redis adapters of the stores, and their plumbing (client, every key name).

Importing any of them registers `store.redis.errors.is_transient_redis` with `bus.transient`,
so the bus runner and the HTTP API retry what redis-py raises when a retry may cure it.
"""

from store.redis import errors as errors
