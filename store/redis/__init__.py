"""The Redis adapters of the stores, and their plumbing (client, every key name)."""
