"""The metrics and health listener of a role process, as an operator runs and reads it.

`coffeebus gateway` runs as a subprocess on the private broker and isolated stores
(tests/coffeebus/conftest.py) with ``COFFEEBUS_OBSERVABILITY__METRICS_PORT`` set: the test
waits for ``/readyz`` to answer 200, counts a client's connection and heartbeats in
``/metrics``, sees the gate's downlink consumer report its lag, and stops the process with
SIGTERM: it must drain and exit 0 without a traceback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sdk.client import Client
from tests.coffeebus.conftest import REPO, Isolated, free_port
from tests.waiting import wait_for

START_S = 90.0
WAIT_S = 30.0
HEARTBEATS = 2


@pytest.mark.parametrize("command", [["gateway"], ["api"], ["consume"], ["run"]])
def test_help_of_every_role_command_explains_the_listener(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coffeebus", *command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = " ".join(result.stdout.split())
    for needle in (
        "log, observability;",
        "[observability] metrics_port (COFFEEBUS_OBSERVABILITY__METRICS_PORT)",
        "metrics_host (COFFEEBUS_OBSERVABILITY__METRICS_HOST, default 127.0.0.1;",
        "/metrics (Prometheus), /healthz and /readyz",
        "Port 0, the default, runs no listener",
        "docs/observability.md",
    ):
        assert needle in text, needle


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: str) -> Samples:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@dataclass
class Gateway:
    """A `coffeebus gateway` process with its listener, and an HTTP client for it."""

    proc: asyncio.subprocess.Process
    stderr: Path
    http: httpx.AsyncClient
    gate_id: str
    tcp_port: int

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    async def get(self, path: str) -> httpx.Response | None:
        """The listener's answer, or None while nothing listens yet; fails if it exited."""
        if self.proc.returncode is not None:
            pytest.fail(f"coffeebus gateway exited {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            return await self.http.get(path)
        except httpx.TransportError:  # not listening yet
            return None

    async def metrics(self) -> Samples:
        response = await self.get("/metrics")
        assert response is not None
        assert response.status_code == 200
        return parse(response.text)

    async def until_metric(self, name: str, value: float, **labels: str) -> None:
        async def reached() -> bool:
            return sample(await self.metrics(), name, **labels) == value

        await wait_for(reached, within=WAIT_S)


@pytest.fixture
async def gateway(isolated: Isolated, tmp_path: Path) -> AsyncIterator[Gateway]:
    """`coffeebus gateway` on the private broker and isolated stores, listener on."""
    metrics_port, tcp_port = free_port(), free_port()
    gate_id = f"cbtest-{uuid.uuid4().hex[:12]}"
    stderr = tmp_path / "gateway.stderr"
    with stderr.open("wb") as err:  # the child keeps its own descriptor
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "coffeebus", "gateway", "--gate-id", gate_id),
            cwd=REPO,
            env={
                **os.environ,
                **isolated.env,
                "COFFEEBUS_GATEWAY__HOST": "127.0.0.1",
                "COFFEEBUS_GATEWAY__TCP_PORT": str(tcp_port),
                "COFFEEBUS_GATEWAY__WS_PORT": str(free_port()),
                "COFFEEBUS_OBSERVABILITY__METRICS_PORT": str(metrics_port),
            },
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{metrics_port}", timeout=5.0
        ) as http:
            yield Gateway(proc, stderr, http, gate_id, tcp_port)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.mongo
async def test_gateway_serves_readiness_and_its_metrics_then_stops_cleanly_on_sigterm(
    gateway: Gateway,
) -> None:
    async def ready() -> bool:
        response = await gateway.get("/readyz")
        return response is not None and response.status_code == 200

    # A cold start on a busy host (imports, Kafka, MongoDB indexes) takes a while.
    await wait_for(ready, within=START_S)
    health = await gateway.get("/healthz")
    assert health is not None
    assert (health.status_code, health.text.strip()) == (200, "ok")

    before = await gateway.metrics()
    assert sample(before, "coffeebus_gate_connections", transport="tcp") == 0
    assert sample(before, "coffeebus_gate_frames_received_total", command="HEARTBEAT") == 0

    client = Client()
    try:
        await client.connect("127.0.0.1", gateway.tcp_port)
        for _ in range(HEARTBEATS):  # echoed before login too
            await client.heartbeat(timeout=WAIT_S)
        await gateway.until_metric("coffeebus_gate_connections", 1, transport="tcp")
        during = await gateway.metrics()
        for name in ("coffeebus_gate_frames_received_total", "coffeebus_gate_frames_sent_total"):
            assert sample(during, name, command="HEARTBEAT") == HEARTBEATS, name
    finally:
        await client.close()
    await gateway.until_metric("coffeebus_gate_connections", 0, transport="tcp")

    # The gate's own downlink consumer reports its lag once it owns its topic's partition.
    topic = f"im.gate.{gateway.gate_id}"
    await gateway.until_metric(
        "coffeebus_consumer_lag", 0, group=f"coffeebus.{topic}", topic=topic, partition="0"
    )

    gateway.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WAIT_S):
        code = await gateway.proc.wait()
    log = gateway.log()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    with pytest.raises(httpx.ConnectError):  # the listener went with the process
        await gateway.http.get("/healthz")
