"""Redis (private to this test, one server, no persistence) restarted mid-load: every route,
cache entry, gate registration and the whole hot state are gone.

This is a disaster the deployment avoids (production runs Redis with a replica and
``[redis] wait_replicas``: `test_services_redis_cluster.py`), and what CoffeeBus still
guarantees through it is written in docs/reliability.md, "Redis without persistence". This
test checks that guarantee, with the projection group running in the test's process:

- nothing acked is lost: every acked message is in ``im.log.msg`` and ``im.log.user``, and
  once the projection has caught up (lag 0) the document store holds every one once, with
  its acked server_msg_id, in order, in its conversation and in both inboxes;
- reads are right once the projection has caught up: Redis's hot state merged with the store
  (what the query group answers) and every client's sync from seq 0 hold every acked message
  once, in order — what Redis lost is below the floors the writers set when they created its
  keys again, so the store answers for it;
- seqs never go back: they are allocated from sections claimed in the store, and each
  client_msg_id was acked with one server_msg_id (the checker);
- the gates register the routes of their live connections again on their next refresh
  (`Gate._refresh_routes`), and a message to each user reaches the connection it never left.

Not checked, because it does not hold without Redis's data (docs/reliability.md): session
lists and unread counts repaired before the projection caught up, delivery marks, and the
dedupe of a resend whose original was acked before the loss.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from schemas.commands import Cmd
from schemas.ids import UserId
from schemas.pb.coffeechat import message_pb2
from tests.chaos.checker import check_sync, record_fault_result, settle
from tests.chaos.faults import GROUPS, assert_clean, projection_behind, run_under_load
from tests.chaos.services import private_services
from tests.consumers.conftest import WAIT_S, next_push, open_real_system
from tests.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.mongo, pytest.mark.timeout(400)]

log = logging.getLogger(__name__)

#: The gate's route refresh period, short so that the test does not wait a minute for it.
HEARTBEAT_S = 1.0
PAIRS, PER_STREAM = 3, 80
#: How long the projection may take to catch up after the load.
CATCH_UP_S = 120.0


async def test_redis_restarted_empty_under_load_loses_nothing_acked(
    tmp_path: Path, kafka_bootstrap: str, mongo_url: str
) -> None:
    async with (
        private_services(tmp_path, redis=True) as services,
        open_real_system(kafka_bootstrap, services.redis_url, mongo_url) as system,
    ):

        async def caught_up() -> None:
            async def done() -> bool:
                return await projection_behind(system) == 0

            await wait_for(done, within=CATCH_UP_S)

        behind: list[int] = []

        async def restart_empty() -> None:
            # What the projection had not written: its only hot copy goes with Redis.
            behind.append(await projection_behind(system))
            await services.restart("redis")

        gate_options = {"heartbeat_interval_s": HEARTBEAT_S, "idle_heartbeats": 120.0}
        run = await run_under_load(
            system,
            restart_empty,
            pairs=PAIRS,
            per_stream=PER_STREAM,
            gate_options=gate_options,
            groups=(*GROUPS, "query", "projection"),
            before_check=caught_up,
        )
        assert_clean(run, expected=2 * PAIRS * PER_STREAM)

        projection = system.runtime.projection
        stored = await settle(run.ledger, inbox=projection.inbox, messages=projection.messages)
        record_fault_result(stored, faults=0)
        assert stored.clean, f"in the document store: {stored.summary()}"
        synced = await check_sync(run.ledger, dict(zip(run.users, run.clients, strict=True)))
        record_fault_result(synced, faults=0)
        assert synced.clean, f"in the clients' sync: {synced.summary()}"
        log.warning(
            "Redis restarted with the projection %d log records behind: %s; store: %s",
            behind[0],
            run.describe().replace("\n", "; "),
            stored.summary(),
        )

        routes = system.runtime.routes

        async def all_routed() -> bool:
            return all(await asyncio.gather(*(routes.get(u) for u in run.users)))

        await wait_for(all_routed, within=10 * HEARTBEAT_S)

        # Reachable again on the connections they never left: a message to each is pushed.
        for i in range(0, len(run.users), 2):
            sender, receiver = run.clients[i], run.clients[i + 1]
            ack = await sender.send_text(UserId(run.users[i + 1]), "after the restart")
            async with asyncio.timeout(WAIT_S):
                while True:  # skip the load's pushes still queued for the client
                    push = await next_push(receiver, Cmd.MSG_DATA)
                    body = push.message
                    assert isinstance(body, message_pb2.MsgData)
                    if body.client_msg_id == ack.client_msg_id:
                        assert body.from_user_id == run.users[i]
                        assert body.server_msg_id == ack.server_msg_id
                        break
