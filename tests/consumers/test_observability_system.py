"""Observability end to end: a message from alice to bob moves the gate's and the consumers'
metrics by the right amounts (scraped from the real listener and parsed), and its trace id —
made at the gate — shows in the logs of the gate, of each consumer that handled it, and of
the gate that delivered it (embedded and real services)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.commands import Cmd
from telemetry.http import TelemetryServer
from telemetry.logcontext import ContextFilter
from tests.consumers.conftest import System, next_push
from tests.waiting import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def scrape() -> AsyncIterator[httpx.AsyncClient]:
    server = TelemetryServer("127.0.0.1", 0)
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        yield client
    await server.stop()


async def _samples(http: httpx.AsyncClient) -> Samples:
    rsp = await http.get("/metrics")
    assert rsp.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(rsp.text)
        for s in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_message_moves_the_metrics_and_carries_its_trace_id(
    system: System, scrape: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bus.runner")
    caplog.set_level(logging.DEBUG, logger="gateway.server")
    caplog.handler.addFilter(ContextFilter())  # as coffeebus.logs installs it
    await system.start_consumers(["msg", "fanout"])
    msg_group, fanout_group = system.group_ids["msg"], system.group_ids["fanout"]
    gate = await system.gate()
    alice, bob = await system.user(), await system.user()
    before_connect = await _samples(scrape)
    alice_c = await system.login(alice, gate)
    bob_c = await system.login(bob, gate)
    fanout_topics = system.topology.group("fanout").topics
    ends_before = await system.positions(fanout_topics)
    before = await _samples(scrape)

    await alice_c.send_text(bob, "traced")
    await next_push(bob_c, Cmd.MSG_DATA)
    await wait_for(lambda: system.caught_up("msg"))
    await wait_for(lambda: system.caught_up("fanout"))
    after = await _samples(scrape)
    fanned_out = sum((await system.positions(fanout_topics)).values()) - sum(ends_before.values())

    def delta(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert (
        _get(before, "coffeebus_gate_connections", transport="tcp")
        - _get(before_connect, "coffeebus_gate_connections", transport="tcp")
        == 2
    )
    assert delta("coffeebus_gate_frames_received_total", command="MSG_DATA") == 1
    assert delta("coffeebus_gate_frames_sent_total", command="MSG_DATA_ACK") == 1
    assert delta("coffeebus_gate_frames_sent_total", command="MSG_DATA") == 1
    consumed_msg = delta("coffeebus_records_consumed_total", group=msg_group, topic="im.up.msg")
    consumed_fanout = delta(
        "coffeebus_records_consumed_total", group=fanout_group, topic="im.fanout"
    )
    if system.kind == "embedded":
        assert consumed_msg == 1
        assert consumed_fanout == fanned_out >= 1
        # caught up: nothing left behind on any partition of theirs
        lags = [
            value
            for (name, labels), value in after.items()
            if name == "coffeebus_consumer_lag" and ("group", msg_group) in labels
        ]
        assert lags
        assert not any(lags)
    else:
        # The shared topics carry records of whatever else uses the broker (another suite on
        # the same machine) too: these groups see them all, and the end offsets move on
        # between the scrape and the `positions` call, so only lower bounds hold.
        assert consumed_msg >= 1
        assert consumed_fanout >= 1
        assert fanned_out >= 1
    assert delta("coffeebus_handler_seconds_count", group=msg_group) >= 1
    assert delta("coffeebus_handler_seconds_count", group=fanout_group) >= 1
    assert delta("coffeebus_dlq_records_total", group=msg_group, topic="im.up.msg") == 0

    published = [
        r
        for r in caplog.records
        if r.name == "gateway.server"
        and "published to" in r.getMessage()
        and getattr(r, "user_id", None) == alice
    ]
    assert len(published) == 1, [r.getMessage() for r in published]
    trace = published[0].__dict__["trace_id"]
    assert published[0].__dict__["conn_id"] > 0

    def handled_by(group: str) -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == "bus.runner"
            and getattr(r, "group", None) == group
            and getattr(r, "trace_id", None) == trace
        ]

    assert [r.__dict__["topic"] for r in handled_by(msg_group)] == ["im.up.msg"]
    assert {r.__dict__["topic"] for r in handled_by(fanout_group)} == {"im.fanout"}
    delivered = [
        r
        for r in caplog.records
        if r.name == "gateway.server"
        and getattr(r, "trace_id", None) == trace
        and getattr(r, "user_id", None) in (alice, bob)
        and "sent" in r.getMessage()
    ]
    # the ack to alice (a Reply) and the message to bob (a Deliver) carry the same trace
    assert {r.__dict__["user_id"] for r in delivered} == {alice, bob}
