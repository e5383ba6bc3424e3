"""Fixtures of the hot-state tests: Redis's timelines in front of MongoDB, with small windows."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from store.clock import ManualClock
from store.mongo.client import Document
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from tests.store.messaging import HotStores, hot_stores

#: Messages per conversation kept beyond what the store has, and entries per inbox.
CONVERSATION_WINDOW = 5
INBOX_WINDOW = 3


@pytest.fixture
def hot(redis: RedisClient, redis_keys: RedisKeys, mongo_db: AsyncDatabase[Document]) -> HotStores:
    """Hot stores with small windows: `CONVERSATION_WINDOW` messages per conversation,
    `INBOX_WINDOW` entries per inbox."""
    return hot_stores(
        redis,
        redis_keys,
        mongo_db,
        clock=ManualClock(),
        conversation_window=CONVERSATION_WINDOW,
        inbox_window=INBOX_WINDOW,
    )
