"""The MongoDB wire-protocol server (a FerretDB private to this test) stopped, or killed, under
load and kept down while messages flow; then started again.

The document store is off the message path (docs/architecture.md, "The logs of record"): a
message is acked once it is in ``im.log.msg`` and Redis's hot state, and the ``projection``
group writes MongoDB behind. So while FerretDB is down:

- the message path does not notice: the test keeps it down until `DOWN_ACKS` more messages
  are acked (it fails if the acks stop), and records how many sends were resent meanwhile;
- the projection group — running in the test's process, as ``coffeebus consume projection``
  runs it — fails its bulk writes with network errors, which the bus runner classes as
  transient and retries with backoff, committing nothing: its lag grows.

Once FerretDB is back, the projection catches up (lag 0) and the checker finds every acked
message once, with its acked server_msg_id, in order, in its conversation and in both
inboxes — in Redis's hot state (what the query group answers), in every client's sync, and
in MongoDB's ``messages`` and ``inbox`` themselves.

What does still touch MongoDB on the way to an ack — a seq section claim (one per 1,000 seqs
of a timeline, and one per timeline after a change of owner: `store.seq`) and a user or group
lookup that misses its cache — waits for it; the load here claims its sections before the
fault and its users are cached, as on a warm system (docs/reliability.md).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.chaos.checker import check_sync, record_fault_result, settle
from tests.chaos.faults import GROUPS, assert_clean, projection_behind, run_under_load
from tests.chaos.harness import Ledger
from tests.chaos.services import private_services
from tests.consumers.conftest import open_real_system
from tests.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.redis, pytest.mark.timeout(400)]

log = logging.getLogger(__name__)

PAIRS, PER_STREAM = 3, 80
#: Messages acked while FerretDB is down: 3 s of the load's 40 msg/s.
DOWN_ACKS = 120
#: How long the message path may take to ack them (it takes ~3 s when it does not notice).
DOWN_WITHIN_S = 30.0
#: How long the projection may take to catch up once FerretDB is back.
CATCH_UP_S = 120.0


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_mongo_down_under_load_the_message_path_does_not_notice(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, how: str
) -> None:
    async with (
        private_services(tmp_path, ferretdb=True) as services,
        open_real_system(kafka_bootstrap, redis_url, services.mongo_url) as system,
    ):
        ledger = Ledger()
        outage: dict[str, float] = {}

        async def down_while_acks_flow() -> None:
            outage["behind_before"] = await projection_behind(system)
            if how == "kill":
                await services.kill("ferretdb")
            else:
                await services.stop("ferretdb")
            t0 = time.monotonic()
            acked, resends = len(ledger.acked), ledger.resends
            # The fault lasts until the load has had DOWN_ACKS more acks: an event, not a
            # time; a message path that waits on the store times out here.
            await ledger.wait_acked(acked + DOWN_ACKS, within=DOWN_WITHIN_S)
            outage["acked"] = len(ledger.acked) - acked
            outage["resends"] = ledger.resends - resends
            outage["behind"] = await projection_behind(system)
            outage["down_s"] = time.monotonic() - t0
            await services.start()

        run = await run_under_load(
            system,
            down_while_acks_flow,
            pairs=PAIRS,
            per_stream=PER_STREAM,
            groups=(*GROUPS, "projection", "query"),
            ledger=ledger,
        )
        log.warning(
            "FerretDB %s: down %.1fs, %d acked and %d resent meanwhile; projection %d records "
            "behind before, %d at the end of the outage",
            how,
            outage["down_s"],
            outage["acked"],
            outage["resends"],
            outage["behind_before"],
            outage["behind"],
        )
        assert_clean(run, expected=2 * PAIRS * PER_STREAM)
        assert outage["acked"] >= DOWN_ACKS
        # The projection wrote nothing while the store was down, and fell behind.
        assert outage["behind"] > 0

        synced = await check_sync(run.ledger, dict(zip(run.users, run.clients, strict=True)))
        record_fault_result(synced, faults=0)
        assert synced.clean, f"in the clients' sync: {synced.summary()}"

        async def caught_up() -> bool:
            return await projection_behind(system) == 0

        await wait_for(caught_up, within=CATCH_UP_S)
        projection = system.runtime.projection
        stored = await settle(run.ledger, inbox=projection.inbox, messages=projection.messages)
        record_fault_result(stored, faults=0)
        assert stored.clean, f"in the document store: {stored.summary()}"
        log.warning(
            "FerretDB %s: %s; store: %s",
            how,
            run.describe().replace("\n", "; "),
            stored.summary(),
        )
