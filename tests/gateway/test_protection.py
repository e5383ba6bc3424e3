"""Protection and error paths: rate limit, bad requests, bus failure, limits, TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path
from typing import TypeVar

import pytest
from websockets.exceptions import InvalidMessage

from bus.base import Headers, RecordMeta, RetriableError
from bus.memory import MemoryBus
from gateway.server import UPLINK_IN_FLIGHT, Gate
from schemas.codes import ExtResultCode
from schemas.commands import Cmd
from schemas.envelope import Deliver, Target, encode_gate_record, now_ms
from schemas.frame import encode_frame
from schemas.ids import ConnId, UserId, new_trace_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, message_pb2
from store.ids import UserId as StoreUserId
from tests.gateway.client import Client, Closed, Kind
from tests.gateway.conftest import Env
from tests.waiting import wait_for

KINDS = ["tcp", "ws"]


def code(body: bytes) -> ExtResultCode:
    return ExtResultCode(ext_pb2.ErrorRsp.FromString(body).result_code)


def text_msg(to: int) -> message_pb2.MsgData:
    return message_pb2.MsgData(
        to_session_id=to,
        client_msg_id=new_trace_id(),
        session_type=base_pb2.SESSION_TYPE_SINGLE,
        msg_data=b"x",
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_rate_limit_answers_error_frames(memory_env: Env, kind: Kind) -> None:
    await memory_env.user(3001)
    gate = await memory_env.gate(rate_limit_per_s=1, rate_limit_burst=5)
    client = await memory_env.connect(gate, kind)
    await client.login(3001, "token-3001")  # takes one token
    frames = b"".join(encode_frame(Cmd.HEARTBEAT, seq) for seq in range(1, 7))
    if kind == "tcp":
        await client.send_raw(frames)
    else:
        for seq in range(1, 7):
            await client.send(Cmd.HEARTBEAT, seq=seq)
    answers = [await client.recv() for _ in range(6)]
    assert [(f.command_id, f.seq) for f in answers[:4]] == [(Cmd.HEARTBEAT, s) for s in range(1, 5)]
    assert [f.seq for f in answers[4:]] == [5, 6]
    assert {code(f.body) for f in answers[4:]} == {ExtResultCode.RATE_LIMITED}


@pytest.mark.parametrize("kind", KINDS)
async def test_unknown_command_and_bad_body_are_answered_not_closed(env: Env, kind: Kind) -> None:
    await env.user(3002)
    gate = await env.gate()
    client = await env.connect(gate, kind)
    await client.login(3002, "token-3002")
    await client.send_raw(encode_frame(0x0999, 5, b""))
    assert code((await client.expect(Cmd.ERROR_RSP)).body) is ExtResultCode.UNKNOWN_COMMAND
    await client.send_raw(encode_frame(Cmd.MSG_DATA, 6, b"\x0a\xff"))
    assert code((await client.expect(Cmd.ERROR_RSP)).body) is ExtResultCode.MALFORMED_BODY
    bad_group = message_pb2.MsgData(to_session_id=0, session_type=base_pb2.SESSION_TYPE_GROUP)
    await client.send(Cmd.MSG_DATA, bad_group)
    assert code((await client.expect(Cmd.ERROR_RSP)).body) is ExtResultCode.INVALID_PARAMETER
    seq = await client.send(Cmd.HEARTBEAT)
    assert (await client.expect(Cmd.HEARTBEAT)).seq == seq


_Bus = TypeVar("_Bus", bound=MemoryBus)


def with_topics(bus: _Bus, env: Env, *, but: str = "") -> _Bus:
    """`bus` with every topic of the environment's topology except `but`."""
    for spec in env.topology.topics.values():
        if spec.name != but:
            bus.create_topic(spec.name, spec.partitions)
    return bus


async def test_publish_failure_is_answered_with_internal_error(memory_env: Env) -> None:
    # A bus where im.up.msg does not exist: every publish there fails, like a bus outage.
    memory_env.bus = with_topics(MemoryBus(), memory_env, but="im.up.msg")
    await memory_env.user(3003)
    gate = await memory_env.gate()
    client = await memory_env.connect(gate, "tcp")
    await client.login(3003, "token-3003")
    seq = await client.send(Cmd.MSG_DATA, text_msg(5))
    frame = await client.expect(Cmd.ERROR_RSP)
    assert frame.seq == seq
    assert code(frame.body) is ExtResultCode.INTERNAL_ERROR
    assert ExtResultCode.INTERNAL_ERROR.retriable
    assert gate.stats.publish_failed == 1


class LateRefusal(MemoryBus):
    """A bus that takes every ``im.up.msg`` record at once and, for the first of them only,
    reports a failure a moment later (a broker that lost it before it was durable)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = False

    async def enqueue(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> asyncio.Future[RecordMeta]:
        durable = await super().enqueue(topic, value, key=key, headers=headers)
        if topic != "im.up.msg" or self.refused:
            return durable
        self.refused = True
        late: asyncio.Future[RecordMeta] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(
            0.2, late.set_exception, RetriableError("NotEnoughReplicas")
        )
        return late


async def test_a_record_failing_after_it_was_queued_is_answered_and_later_frames_go_on(
    memory_env: Env,
) -> None:
    # The gate does not wait for a record to be durable before taking the connection's next
    # frame; when the first one fails, its frame (and only it) gets INTERNAL_ERROR.
    memory_env.bus = with_topics(LateRefusal(), memory_env)
    await memory_env.user(3004)
    gate = await memory_env.gate()
    client = await memory_env.connect(gate, "tcp")
    await client.login(3004, "token-3004")
    first = await client.send(Cmd.MSG_DATA, text_msg(5))
    second = await client.send(Cmd.MSG_DATA, text_msg(5))
    await wait_for(lambda: gate.stats.published == 1, within=5)
    assert gate.stats.publish_failed == 0  # the second was taken before the first failed
    frame = await client.expect(Cmd.ERROR_RSP)
    assert (frame.seq, code(frame.body)) == (first, ExtResultCode.INTERNAL_ERROR)
    assert second != first
    assert (gate.stats.published, gate.stats.publish_failed) == (1, 1)


class HeldBus(MemoryBus):
    """A bus whose ``im.up.msg`` records stay on their way until the test lets them land."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[asyncio.Future[RecordMeta], RecordMeta]] = []

    async def enqueue(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> asyncio.Future[RecordMeta]:
        durable = await super().enqueue(topic, value, key=key, headers=headers)
        if topic != "im.up.msg":
            return durable
        held: asyncio.Future[RecordMeta] = asyncio.get_running_loop().create_future()
        self.held.append((held, durable.result()))
        return held

    def land(self, count: int) -> None:
        for held, meta in self.held[:count]:
            if not held.done():
                held.set_result(meta)


async def test_a_connection_has_at_most_sixteen_records_on_their_way(memory_env: Env) -> None:
    bus = with_topics(HeldBus(), memory_env)
    memory_env.bus = bus
    await memory_env.user(3005)
    gate = await memory_env.gate()
    client = await memory_env.connect(gate, "tcp")
    await client.login(3005, "token-3005")
    for _ in range(UPLINK_IN_FLIGHT + 4):
        await client.send(Cmd.MSG_DATA, text_msg(5))
    await wait_for(lambda: len(bus.held) == UPLINK_IN_FLIGHT, within=5)
    await asyncio.sleep(0.2)  # room for a frame the bound failed to hold back
    assert len(bus.held) == UPLINK_IN_FLIGHT
    bus.land(1)
    await wait_for(lambda: len(bus.held) == UPLINK_IN_FLIGHT + 1, within=5)
    bus.land(UPLINK_IN_FLIGHT + 4)
    await wait_for(lambda: len(bus.held) == UPLINK_IN_FLIGHT + 4, within=5)
    bus.land(UPLINK_IN_FLIGHT + 4)
    await wait_for(lambda: gate.stats.published == UPLINK_IN_FLIGHT + 4, within=5)


@pytest.mark.parametrize("kind", KINDS)
async def test_connections_above_the_maximum_are_refused(memory_env: Env, kind: Kind) -> None:
    gate = await memory_env.gate(max_connections=2)
    first, second = await memory_env.connect(gate, kind), await memory_env.connect(gate, kind)
    await wait_for(lambda: gate.connections == 2)
    try:
        third = await memory_env.connect(gate, kind)
        assert await third.wait_closed() == []
    except (ConnectionError, OSError):
        pass  # the hang-up may already break the WebSocket handshake
    assert gate.stats.refused == 1
    for client in (first, second):
        seq = await client.send(Cmd.HEARTBEAT)
        assert (await client.expect(Cmd.HEARTBEAT)).seq == seq


@pytest.mark.parametrize("kind", KINDS)
async def test_a_client_that_does_not_read_is_disconnected(memory_env: Env, kind: Kind) -> None:
    await memory_env.user(3004)
    gate = await memory_env.gate(send_queue_frames=8)
    client = await memory_env.connect(gate, kind)
    await client.login(3004, "token-3004")
    [route] = await memory_env.routes.get(StoreUserId(3004))
    target = Target(conn_id=ConnId(route.conn_id), user_id=UserId(3004))
    record = Deliver(
        cmd=Cmd.MSG_DATA,
        body=b"\x00" * 200_000,
        targets=(target,),
        trace_id=new_trace_id(),
        ts_ms=now_ms(),
    )
    # The client reads nothing. Kernel buffers take a few MB; then the queue fills.
    for _ in range(400):
        await memory_env.bus.publish(gate.topic, encode_gate_record(record), key=b"0")
        if gate.connections == 0:
            break
        await asyncio.sleep(0)  # let the gate consume
    await wait_for(lambda: gate.connections == 0)
    await wait_for(lambda: _no_routes(memory_env, 3004))
    client.abort()  # megabytes are still unread on this side


async def _no_routes(env: Env, user_id: int) -> bool:
    return not await env.routes.get(StoreUserId(user_id))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("kind", KINDS)
async def test_tls(memory_env: Env, kind: Kind, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    await memory_env.user(3005)
    gate: Gate = await memory_env.gate(tls_cert=str(cert), tls_key=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    port = gate.tcp_port if kind == "tcp" else gate.ws_port
    client = await Client.connect(kind, port, tls=context)
    memory_env.clients.append(client)
    rsp = await client.login(3005, "token-3005")
    assert rsp.user_info.user_id == 3005

    async def plaintext_login() -> None:  # plaintext on the TLS port
        plain = await Client.connect(kind, port)
        memory_env.clients.append(plain)
        await plain.login(3005, "token-3005")

    with pytest.raises((ssl.SSLError, ConnectionError, Closed, InvalidMessage)):
        await plaintext_login()
