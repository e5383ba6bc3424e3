"""Redis (private to this test, no persistence) restarted mid-load: every route is gone.

The gate re-registers the routes of its live connections on its next refresh round
(`Gate._refresh_routes`: a refresh that finds the key lapsed registers the route again), so
connected clients become reachable again without reconnecting. Messages fanned out while
their receiver had no route are still in the receiver's inbox (pulled or synced), and the
checker demands every acked one there exactly once, in order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schemas.commands import Cmd
from schemas.ids import UserId
from schemas.pb.coffeechat import message_pb2
from tests.chaos.faults import assert_clean, run_under_load
from tests.chaos.services import private_services
from tests.consumers.conftest import WAIT_S, next_push, open_real_system
from tests.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.mongo, pytest.mark.timeout(300)]

#: The gate's route refresh period, short so that the test does not wait a minute for it.
HEARTBEAT_S = 1.0


async def test_redis_restarted_under_load_routes_come_back_nothing_lost(
    tmp_path: Path, kafka_bootstrap: str, mongo_url: str
) -> None:
    async with (
        private_services(tmp_path, redis=True) as services,
        open_real_system(kafka_bootstrap, services.redis_url, mongo_url) as system,
    ):
        gate_options = {"heartbeat_interval_s": HEARTBEAT_S, "idle_heartbeats": 120.0}
        run = await run_under_load(
            system, lambda: services.restart("redis"), gate_options=gate_options
        )
        assert_clean(run, expected=6 * 80)

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
