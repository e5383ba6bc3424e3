"""The whole system as it would be deployed, on this machine, losing one of every kind of
process and node in turn (issue 17, item 3).

Deployed: a three-broker Kafka with the production overlay (topology.prod.yaml: replication
3, ``min.insync.replicas`` 2, no unclean leader election), a Redis Cluster of three masters
with a replica each (``[redis] wait_replicas = 1``), FerretDB on PostgreSQL — all private to
this test — and, as processes of their own: two gates, two members of every consumer group
(``msg`` and ``fanout`` each in processes of their own, the other groups two processes that
hold one member of each), and the HTTP API.

Load, through both gates: c2c messages one way and the other between clients of the two
gates, a group's messages to members on both, and business pushes through the API (stored
pushes, ``store: true``: each a system message from a robot account in its single chat with
the recipient, delivered live through the recipient's gate and kept). Clients know both gates
and reconnect to the other one; a send without an answer is sent again with its
client_msg_id, a push whose request failed again with its push_id.

Under that load, one at a time, each after the load moved on since the previous one: a gate
killed (SIGKILL) and started again, one member of ``msg``, one of ``fanout`` (each started
again with its static member id), one Redis master (its replica takes over; the killed node
comes back as a replica), one Kafka broker (the one leading the most ``im.up.msg``
partitions; started again, back in sync). Then: every acked message and every accepted push
is stored once in its conversation and in every recipient's inbox once, in order (the
delivery checker), every client is connected and catches up by sync from seq 0 to exactly
that, and no process wrote a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
from aiokafka.admin import AIOKafkaAdminClient

from bus.admin import apply
from bus.topology import Topology, load_topology
from coffeebus.settings import KafkaSettings, MongoSettings, RedisSettings, Settings
from coffeebus.wiring import Mode, open_runtime
from schemas.codes import SessionType
from schemas.ids import UserId, c2c_conversation_id
from store.mongo.groups import GROUP_ID_TIMELINE
from store.redis.keys import RedisKeys
from tests.chaos.checker import check_sync, read_timeline, record_fault_result, settle
from tests.chaos.conftest import ChaosSystem
from tests.chaos.gates import GateProcess, connect_across
from tests.chaos.harness import Acked, Load, c2c, group
from tests.chaos.processes import (
    GIVE_UP_S,
    WAIT_S,
    RoleProcess,
    free_port,
    role_test_marks,
    wait_listening,
    wait_serving,
    write_topology,
)
from tests.chaos.services import PrivateServices, private_services
from tests.chaos.test_services_kafka_cluster import PROD_OVERLAY
from tests.chaos.test_services_redis_cluster import busiest_hot_master, fail_over
from tests.waiting import wait_for

log = logging.getLogger(__name__)

#: Eleven processes and ten servers to start, five faults: far above the usual bound.
pytestmark = role_test_marks(1500)

#: The groups with their own pair of processes; the others share a pair (`OTHER_GROUPS`).
OWN_PROCESSES = ("msg", "fanout")
OTHER_GROUPS = ("ack", "query", "group", "projection", "timer", "push", "biz", "webhook")
#: Messages a second over all streams, and pushes a second.
RATE = 40.0
PUSH_EVERY_S = 0.5
#: Acks between two faults (and after the last one): each fault meets a load in full flow.
ACKS_BETWEEN_FAULTS = 150


@contextlib.asynccontextmanager
async def deployed(
    services: PrivateServices, tmp_path: Path
) -> AsyncIterator[tuple[ChaosSystem, Topology, dict[str, str]]]:
    """A `ChaosSystem` on `services` with the production overlay and WAIT for replicas; the
    environment its role processes add to `ChaosSystem.process`'s."""
    topology_file = write_topology(tmp_path / "topology.yaml", uuid.uuid4().hex[:12])
    topology = load_topology(topology_file, overlay=PROD_OVERLAY)
    await apply(topology, services.kafka_bootstrap)
    suffix = uuid.uuid4().hex[:12]
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=services.kafka_bootstrap, linger_ms=1),
        mongo=MongoSettings(url=services.mongo_url, database=f"cbdeployed_{suffix}"),
        redis=RedisSettings(
            url=services.redis_url, key_prefix=f"cbdeployed:{suffix}:", wait_replicas=1
        ),
    )
    env = {
        "COFFEEBUS_TOPOLOGY_OVERLAY": str(PROD_OVERLAY),
        "COFFEEBUS_REDIS__WAIT_REPLICAS": "1",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    async with open_runtime(
        settings, Mode.REAL, client_id=f"deployed-{suffix}", topology=topology
    ) as runtime:
        await runtime.sections.reserve(GROUP_ID_TIMELINE, random.randrange(1 << 40, 1 << 47))
        system = ChaosSystem(
            runtime,
            kafka_bootstrap=services.kafka_bootstrap,
            topology_file=topology_file,
            logs=logs,
        )
        try:
            yield system, topology, env
        finally:
            await system.close()


async def _busiest_broker(services: PrivateServices) -> str:
    """The Kafka node leading the most ``im.up.msg`` partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics(["im.up.msg"])
    finally:
        await admin.close()
    leaders = Counter(int(p["leader"]) for p in described["partitions"])
    return f"kafka-{leaders.most_common(1)[0][0]}"


class _Pushes:
    """Stored business pushes through the API, one every `PUSH_EVERY_S`, each to two users;
    a request that fails is sent again with the same push_id until it is accepted."""

    def __init__(self, api: str, robot: UserId, recipients: list[UserId]) -> None:
        self.api = api
        self.robot = robot
        self.recipients = recipients
        self.accepted: list[tuple[str, tuple[UserId, ...]]] = []
        self.retries = 0
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.api, timeout=10.0) as http:
            n = 0
            while not self._stopping:
                to = (
                    self.recipients[n % len(self.recipients)],
                    self.recipients[(n + 1) % len(self.recipients)],
                )
                push_id = f"p-{n}"
                body = {
                    "to_user_ids": list(to),
                    "msg_type": 1,
                    "msg_data": f"push {n}",
                    "push_id": push_id,
                    "store": True,
                    "from_user_id": self.robot,
                }
                while True:
                    try:
                        answer = await http.post("/v1/push", json=body)
                        if answer.status_code == 200:
                            break
                        assert answer.status_code >= 500, answer.text  # a 4xx is a bug
                    except httpx.TransportError:
                        pass
                    self.retries += 1
                    await asyncio.sleep(0.5)  # a business server's retry backoff
                self.accepted.append((push_id, to))
                n += 1
                await asyncio.sleep(PUSH_EVERY_S)  # load shaping

    async def as_acked(self, system: ChaosSystem) -> list[Acked]:
        """Each accepted push as the message it became (one per recipient), once the msg
        group has stored it; a push found twice in its conversation comes back twice (the
        checker counts it duplicated), one never stored is missing (lost)."""
        messages = system.runtime.messages
        found: dict[tuple[str, UserId], list[int]] = {}
        wanted = {(push_id, user) for push_id, to in self.accepted for user in to}

        async def stored() -> bool:
            found.clear()
            for user in {user for _, user in wanted}:
                timeline = await read_timeline(messages, c2c_conversation_id(self.robot, user))
                for message in timeline:
                    push_id = message.client_msg_id.removeprefix("s2c-")
                    found.setdefault((push_id, user), []).append(message.seq)
            return wanted <= found.keys()

        with contextlib.suppress(TimeoutError):
            await wait_for(stored, within=120.0)
        acked = []
        for (push_id, user), seqs in found.items():
            for seq in seqs:
                acked.append(
                    Acked(
                        sender=self.robot,
                        conversation=c2c_conversation_id(self.robot, user),
                        session_type=SessionType.SINGLE,
                        recipients=(user, self.robot),
                        client_msg_id=f"s2c-{push_id}",
                        server_msg_id=seq,
                        attempts=1,
                    )
                )
        return acked


async def test_the_deployed_system_loses_one_of_everything_and_nothing_acked(
    tmp_path: Path,
) -> None:
    async with (
        private_services(tmp_path, kafka_nodes=3, redis_nodes=6, ferretdb=True) as services,
        deployed(services, tmp_path) as (system, topology, env),
    ):
        # -- the processes ---------------------------------------------------------------
        consumers: dict[str, list[RoleProcess]] = {}
        for name in OWN_PROCESSES:
            consumers[name] = [
                system.process(
                    f"{name}-{m}",
                    ["consume", name, "--static-member-id", m],
                    env_overrides=env,
                )
                for m in ("a", "b")
            ]
        others = [
            system.process(
                f"others-{m}",
                ["consume", *OTHER_GROUPS, "--static-member-id", m],
                env_overrides=env,
            )
            for m in ("a", "b")
        ]
        api_port = free_port()
        api = system.process(
            "api",
            ["api"],
            env_overrides={
                **env,
                "COFFEEBUS_API__HOST": "127.0.0.1",
                "COFFEEBUS_API__PORT": str(api_port),
            },
        )
        gates = [GateProcess(system, "g1", env), GateProcess(system, "g2", env)]
        for process in [*(p for pair in consumers.values() for p in pair), *others, api]:
            process.start()
        await asyncio.gather(*(g.start() for g in gates), wait_listening(api_port, within=WAIT_S))
        await wait_serving(
            topology,
            services.kafka_bootstrap,
            [*OWN_PROCESSES, *OTHER_GROUPS],
            members=2,
            within=WAIT_S,
        )

        # -- clients on both gates, each knowing the other ---------------------------------
        users = [await system.user() for _ in range(6)]
        robot = await system.user()
        clients, reconnects = await connect_across(system, users, gates)
        a, b, c, d, e, f = users
        created = await clients[a].create_group("deployed", users)
        group_id = created.group_info.group_id
        members = [UserId(u) for u in created.member_id_list]

        load = Load(rate=RATE, window=4, give_up_after=GIVE_UP_S)
        load.add(clients[a], a, c2c(a, b), count=10**6)  # g1 -> g2
        load.add(clients[d], d, c2c(d, c), count=10**6)  # g2 -> g1
        load.add(clients[c], c, c2c(c, f), count=10**6)  # g1 -> g2
        load.add(clients[f], f, group(group_id, members), count=10**6)  # g2 -> everyone
        pushes = _Pushes(f"http://127.0.0.1:{api_port}", robot, [b, c, e, f])

        # -- the faults, one at a time -------------------------------------------------------
        async def kill_gate() -> None:
            gates[0].process.kill()
            await gates[0].start()

        async def kill_member(group_name: str) -> None:
            process = consumers[group_name][0]
            process.kill()
            process.start()
            await wait_serving(
                topology, services.kafka_bootstrap, [group_name], members=2, within=WAIT_S
            )

        async def kill_redis_master() -> None:
            await fail_over(services, await busiest_hot_master(services, RedisKeys()))

        async def kill_broker() -> None:
            victim = await _busiest_broker(services)
            await services.kill(victim)
            await services.start()

        faults: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("gate g1", kill_gate),
            ("a msg member", lambda: kill_member("msg")),
            ("a fanout member", lambda: kill_member("fanout")),
            ("a Redis master", kill_redis_master),
            ("a Kafka broker", kill_broker),
        ]
        t0 = time.monotonic()
        load.start()
        pushing = asyncio.create_task(pushes.run())
        try:
            for name, fault in faults:
                await load.ledger.wait_acked(
                    len(load.ledger.acked) + ACKS_BETWEEN_FAULTS, within=WAIT_S
                )
                log.warning(
                    "fault: %s, after %d acks at %.1fs",
                    name,
                    len(load.ledger.acked),
                    time.monotonic() - t0,
                )
                f0 = time.monotonic()
                await fault()
                log.warning("fault: %s over in %.1fs", name, time.monotonic() - f0)
            await load.ledger.wait_acked(
                len(load.ledger.acked) + ACKS_BETWEEN_FAULTS, within=WAIT_S
            )
            load.stop()
            pushes.stop()
            await load.finish(within=WAIT_S)
            await asyncio.wait_for(pushing, timeout=WAIT_S)
        finally:
            await load.cancel()
            pushing.cancel()
            await asyncio.gather(pushing, return_exceptions=True)
        log.warning(
            "load done at %.1fs: %d acked, %d resends, %d pushes (%d retried requests)",
            time.monotonic() - t0,
            len(load.ledger.acked),
            load.ledger.resends,
            len(pushes.accepted),
            pushes.retries,
        )

        # -- the checks ----------------------------------------------------------------------
        ledger = load.ledger
        ledger.assert_every_send_answered()
        push_acks = await pushes.as_acked(system)
        for acked in push_acks:
            ledger.record(acked)
        runtime = system.runtime
        report = await settle(ledger, inbox=runtime.inbox, messages=runtime.messages)
        push_lost = sum(len(to) for _, to in pushes.accepted) - len(
            {(a.client_msg_id, a.recipients[0]) for a in push_acks}
        )
        report = msgspec.structs.replace(report, lost=report.lost + push_lost)
        record_fault_result(report, faults=len(faults))
        log.warning("deployed system: faults=%d %s", len(faults), report.summary())
        assert report.clean, report.summary()

        # Every client of the killed gate came back, on whichever gate is up; all catch up.
        await wait_for(lambda: all(clients[u].connected for u in users), within=WAIT_S)
        assert all(reconnects[u] >= 1 for u in users[0::2]), reconnects
        synced = await check_sync(ledger, clients)
        record_fault_result(synced, faults=0)
        assert synced.clean, synced.summary()
        assert not system.tracebacks(), "\n".join(system.tracebacks())
