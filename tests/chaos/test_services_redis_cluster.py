"""A Redis Cluster (private to this test: three masters with a replica each) loses a master to
SIGKILL under load: its replica takes over, and nothing acked is lost.

The stores run on the cluster with ``[redis] wait_replicas = 1`` (docs/operations.md, "Redis
Cluster"): every hot-state write that precedes a log append — the message and its resend
dedupe, inbox entries, sessions, read and delivery marks — is on the master's replica before
the handler goes on, so the replica that takes over has it. The victim is the master serving
the most of the hot state's shards. While it is down and until its replica is elected, writes
to its slots fail and are retried (the bus runner); once the cluster is whole again the killed
node is started again (no persistence: it comes back empty and joins as the new master's
replica), and the checker must find every acked message once in its timeline and in both
inboxes, in order — read through the cluster, where the reads trust the hot state above each
timeline's floor.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
from redis.crc import key_slot

from store.redis.keys import RedisKeys
from tests.chaos.faults import assert_clean, run_under_load
from tests.chaos.services import PrivateServices, private_services
from tests.consumers.conftest import open_real_system
from tests.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.mongo, pytest.mark.timeout(420)]

log = logging.getLogger(__name__)

#: The gate's route refresh period: routes are not waited for, a failover may lose the last
#: ones, and the gate registers a lapsed route again at its next refresh.
HEARTBEAT_S = 1.0
#: services.sh's node timeout is 3 s; an election follows: the slots are served again well
#: within this.
FAILOVER_WITHIN_S = 60.0


def hot_slots(keys: RedisKeys) -> set[int]:
    """The cluster slots of the hot state: one per shard of conversations and of users."""
    return {
        key_slot(f"{kind}{shard}".encode()) for kind in "cu" for shard in range(keys.hot_shards)
    }


async def busiest_hot_master(services: PrivateServices, keys: RedisKeys) -> str:
    """The master serving the most hot-state slots."""
    masters = await services.redis_masters()
    served = Counter(
        {
            name: sum(1 for s in hot_slots(keys) if any(lo <= s <= hi for lo, hi in ranges))
            for name, ranges in masters.items()
        }
    )
    log.info("hot-state slots per master: %s", dict(served))
    return served.most_common(1)[0][0]


async def fail_over(services: PrivateServices, victim: str) -> None:
    """SIGKILL master `victim`, wait until a replica serves its slots (three masters again,
    none of them the victim), then start the victim again and wait for the whole cluster."""
    masters = await services.redis_masters()
    slots = masters[victim]
    await services.kill(victim)

    async def taken_over() -> bool:
        now = await services.redis_masters()
        return victim not in now and any(slots == ranges for ranges in now.values())

    await wait_for(taken_over, within=FAILOVER_WITHIN_S)
    log.info("%s failed over: masters now %s", victim, sorted(await services.redis_masters()))
    await services.start()  # the victim, empty, joins as a replica; every node healthy


async def test_a_killed_redis_master_fails_over_and_nothing_acked_is_lost(
    tmp_path: Path, kafka_bootstrap: str, mongo_url: str
) -> None:
    async with (
        private_services(tmp_path, redis_nodes=6) as services,
        open_real_system(
            kafka_bootstrap, services.redis_url, mongo_url, redis_options={"wait_replicas": 1}
        ) as system,
    ):
        victim = await busiest_hot_master(services, RedisKeys())

        gate_options = {"heartbeat_interval_s": HEARTBEAT_S, "idle_heartbeats": 120.0}
        run = await run_under_load(
            system, lambda: fail_over(services, victim), gate_options=gate_options
        )
        assert_clean(run, expected=6 * 80)
        assert victim not in await services.redis_masters()  # it came back as a replica
        assert services.pid(victim) is not None
