"""The gate process: real dependencies from settings, run until SIGTERM / SIGINT, drain.

`run_gateway` is what ``coffeebus gateway`` calls; `run` is the synchronous entry that also
installs uvloop when it is available (library code never forces an event loop policy).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from bus.kafka import KafkaBus
from bus.topology import load_topology
from coffeebus.settings import Settings
from gateway.server import Gate
from store.keys import RedisKeys
from store.mongo import connect_mongo, database, ensure_indexes
from store.redis import connect_redis
from store.routes_redis import RedisRouteStore
from store.users_mongo import MongoUserStore

__all__ = ["run", "run_gateway"]

log = logging.getLogger(__name__)


async def run_gateway(settings: Settings) -> None:
    """Run one gate on Kafka, MongoDB and Redis until SIGTERM or SIGINT, then drain."""
    settings = settings.with_gate_id()
    topology = load_topology()
    kafka = settings.kafka
    bus = KafkaBus(
        kafka.bootstrap_servers,
        client_id=f"{kafka.client_id}-gate-{settings.gateway.gate_id}",
        linger_ms=kafka.linger_ms,
        max_batch_size=kafka.max_batch_size,
        compression_type=kafka.compression_type,
        request_timeout_ms=kafka.request_timeout_ms,
    )
    redis = connect_redis(settings.redis.url)
    keys = RedisKeys(namespace=settings.redis.key_prefix)
    mongo = connect_mongo(
        settings.mongo.url,
        server_selection_timeout=settings.mongo.server_selection_timeout_ms / 1000,
    )
    db = database(mongo, settings.mongo.database)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    gate: Gate | None = None
    try:
        await ensure_indexes(db)
        await bus.start()
        gate = Gate(
            settings.gateway,
            bus=bus,
            user_store=MongoUserStore(db, redis, keys=keys),
            route_store=RedisRouteStore(redis, keys=keys),
            topology=topology,
        )
        await gate.start()
        await stop.wait()
        log.info("gate %s: signal received, draining", gate.gate_id)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if gate is not None:
            await gate.stop()
        await bus.stop()
        await redis.aclose()
        await mongo.close()


def run(settings: Settings) -> None:
    """Run the gate process on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop  # noqa: PLC0415  # optional: only the process entry may choose the loop
    except ImportError:
        asyncio.run(run_gateway(settings))
    else:
        uvloop.run(run_gateway(settings))
