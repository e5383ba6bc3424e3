"""End-to-end smoke check of the running services with the project's own client libraries.

Run from the repo root after ``bash services/services.sh up``::

    uv run python services/smoke.py

It exercises what CoffeeBus relies on, against the real servers: aiokafka creates a topic with
the admin client, produces with acks=all and idempotence and consumes it back in a consumer
group with manual commits; pymongo's AsyncMongoClient inserts, finds, upserts and has a unique
index enforced; redis.asyncio round-trips a key and a stream entry. Everything it creates
carries a random suffix and is deleted again. Exit status 0 means all three work.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError
from redis.asyncio import Redis

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017")
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
TIMEOUT_S = 60.0


async def check_kafka(suffix: str) -> str:
    """Create a topic, produce three records, consume them in a group, delete the topic."""
    topic = f"smoke-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(topic, f"v{i}".encode(), key=b"conversation-1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=KAFKA,
            group_id=f"smoke-group-{suffix}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            values: list[bytes] = []
            while len(values) < 3:
                batch = await consumer.getmany(timeout_ms=1000)
                values += [record.value for records in batch.values() for record in records]
            await consumer.commit()
        finally:
            await consumer.stop()
        assert values == [b"v0", b"v1", b"v2"], values  # one key: one partition, in order
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    return f"topic created, 3 records produced and consumed in a group, offsets committed ({KAFKA})"


async def check_mongo(suffix: str) -> str:
    """Insert, find, upsert and violate a unique index, then drop the database."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(MONGO)
    db = client[f"smoke_{suffix}"]
    try:
        users = db["users"]
        await users.create_index("name", unique=True)
        await users.insert_one({"_id": 1, "name": "ada"})
        found = await users.find_one({"name": "ada"})
        assert found == {"_id": 1, "name": "ada"}, found
        await users.update_one({"_id": 2}, {"$set": {"name": "bob"}}, upsert=True)
        assert await users.count_documents({}) == 2
        try:
            await users.insert_one({"_id": 3, "name": "ada"})
        except DuplicateKeyError:
            pass
        else:
            raise AssertionError("unique index on name was not enforced")
    finally:
        await client.drop_database(db.name)
        await client.close()
    return f"insert/find/upsert ok, unique index enforced ({MONGO})"


async def check_redis(suffix: str) -> str:
    """PING, a key with expiry and a stream entry."""
    redis = Redis.from_url(REDIS)
    try:
        assert await redis.ping()
        key = f"smoke:{suffix}"
        await redis.set(key, b"1", ex=30)
        assert await redis.get(key) == b"1"
        entry = await redis.xadd(f"{key}:stream", {"k": "v"})
        assert await redis.xlen(f"{key}:stream") == 1, entry
        await redis.delete(key, f"{key}:stream")
    finally:
        await redis.aclose()
    return f"ping, set/get and a stream entry ok ({REDIS})"


async def main() -> int:
    """Run the three checks one after another; print one line each."""
    suffix = uuid.uuid4().hex[:12]
    checks = {"kafka": check_kafka, "mongo": check_mongo, "redis": check_redis}
    failed = 0
    for name, check in checks.items():
        start = time.monotonic()
        try:
            summary = await asyncio.wait_for(check(suffix), TIMEOUT_S)
        except Exception as exc:
            failed += 1
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}")
        else:
            print(f"{name}: {summary} in {time.monotonic() - start:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
