"""telemetry.http: /metrics parses, /healthz answers, /readyz follows a real Redis going down."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.commands import Cmd
from store.redis import client as redis_store
from store.redis.client import RedisClient
from telemetry.http import TelemetryServer
from telemetry.metrics import FRAMES_IN
from tests.waiting import wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own on a free port (never the shared one)."""
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_metrics_and_health(http: httpx.AsyncClient) -> None:
    server = TelemetryServer("127.0.0.1", 0)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        FRAMES_IN.inc(Cmd.HEARTBEAT, 0)
        before = _sample(await http.get(f"{base}/metrics"), "HEARTBEAT")
        FRAMES_IN.inc(Cmd.HEARTBEAT, 3)
        rsp = await http.get(f"{base}/metrics")
        assert rsp.status_code == 200
        assert rsp.headers["content-type"].startswith("text/plain")
        assert _sample(rsp, "HEARTBEAT") == before + 3
        health = await http.get(f"{base}/healthz")
        assert (health.status_code, health.text) == (200, "ok\n")
        ready = await http.get(f"{base}/readyz")  # no checks: ready
        assert (ready.status_code, ready.text) == (200, "ready\n")
        assert (await http.get(f"{base}/nope")).status_code == 404
        assert (await http.post(f"{base}/metrics")).status_code == 405
    finally:
        await server.stop()


async def test_an_oversized_or_silent_request_does_not_hold_the_listener() -> None:
    server = TelemetryServer("127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 431")
        writer.close()
    finally:
        await server.stop()


@pytest.mark.redis
async def test_readyz_follows_a_dependency(
    private_redis: tuple[str, subprocess.Popen[bytes]], http: httpx.AsyncClient
) -> None:
    url, proc = private_redis
    redis = redis_store.connect_redis(url)
    await wait_for(lambda: _answers(redis), within=10)
    server = TelemetryServer("127.0.0.1", 0, checks=[("redis", lambda: redis_store.ping(redis))])
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        ready = await http.get(f"{base}/readyz")
        assert (ready.status_code, ready.text) == (200, "ready\n")
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
        down = await http.get(f"{base}/readyz")
        assert (down.status_code, down.text) == (503, "redis not ready\n")
        assert (await http.get(f"{base}/healthz")).status_code == 200  # alive all the same
    finally:
        await server.stop()
        await redis.aclose()


async def _answers(redis: RedisClient) -> bool:
    try:
        await redis_store.ping(redis)
    except Exception:
        return False
    return True


def _sample(rsp: httpx.Response, command: str) -> float:
    for family in text_string_to_metric_families(rsp.text):
        for sample in family.samples:
            if (
                sample.name == "coffeebus_gate_frames_received_total"
                and sample.labels["command"] == command
            ):
                return sample.value
    raise AssertionError(f"no frames_received sample for {command}")
