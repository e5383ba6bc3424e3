"""The MongoDB wire-protocol server (a FerretDB private to this test) restarted mid-load.

While it is down every store call of the msg and fanout groups fails with a network error,
which the bus runner classes as transient (`store.mongo.errors`, registered with
`bus.transient`: PyMongo's `AutoReconnect` family): the batch is retried with backoff,
nothing is committed, nothing is dead-lettered, and nothing is acked — the sender's
MsgDataAck leaves only after the message is stored (DESIGN invariant 4), so clients resend
with the same client_msg_id. When the server is back the retries go through: the checker
finds every acked message stored once with the acked server_msg_id and in both inboxes, in
order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.chaos.faults import assert_clean, run_under_load
from tests.chaos.services import private_services
from tests.consumers.conftest import open_real_system

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.redis, pytest.mark.timeout(300)]


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_mongo_restarted_under_load_retries_and_loses_nothing(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bus.runner")
    async with (
        private_services(tmp_path, ferretdb=True) as services,
        open_real_system(kafka_bootstrap, redis_url, services.mongo_url) as system,
    ):
        run = await run_under_load(system, lambda: services.restart("ferretdb", kill=how == "kill"))
        assert_clean(run, expected=6 * 80)
    runner_log = [r.getMessage() for r in caplog.records if r.name == "bus.runner"]
    assert any("failed transiently" in m for m in runner_log), "no store call was retried"
    assert not [m for m in runner_log if "dead-lettering" in m]
