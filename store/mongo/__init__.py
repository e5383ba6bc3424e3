"""The MongoDB adapters of the stores, and their plumbing (client, collections, bulk writes).

Importing any of them registers `store.mongo.errors.is_transient_mongo` with `bus.transient`,
so the bus runner and the HTTP API retry what PyMongo raises when a retry may cure it.
"""

from store.mongo import errors as errors
