"""The MongoDB adapters of the stores, and their plumbing (client, collections, bulk writes)."""
