"""`coffeebus api`: the API process on the real services."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

import httpx
import pytest

from store.mongo.client import connect_mongo
from store.redis.client import connect_redis


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.kafka
@pytest.mark.mongo
@pytest.mark.redis
async def test_api_process_serves_on_the_real_stores_and_stops_on_sigterm(
    kafka_bootstrap: str, mongo_url: str, redis_url: str
) -> None:
    suffix = uuid.uuid4().hex[:12]
    port = _free_port()
    database = f"cbtest_api_{suffix}"
    prefix = f"cbtest:{suffix}:"
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        MONGO_URL=mongo_url,
        REDIS_URL=redis_url,
        COFFEEBUS_API__PORT=str(port),
        COFFEEBUS_MONGO__DATABASE=database,
        COFFEEBUS_REDIS__KEY_PREFIX=prefix,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coffeebus", "api", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while b"HTTP API listening" not in (line := await proc.stderr.readline()):
                assert line, "coffeebus api exited before it listened"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/readyz")).json() == {"status": "ready"}
            created = await http.put("/v1/users/42", json={"nick_name": "real"})
            assert created.status_code == 200
            assert (await http.get("/v1/users/42")).json()["nick_name"] == "real"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        mongo = connect_mongo(mongo_url)
        await mongo.drop_database(database)
        await mongo.close()
        redis = connect_redis(redis_url)
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
