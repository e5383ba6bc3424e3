"""Calls across two gate processes with faults (issue 15): a call in progress survives a
killed gate and a killed consumer process, and a party that disappears ends the call for
the other one.

Two `coffeebus gateway` processes, the consumer groups in one `coffeebus consume` process
(with the call group), every call state in Redis. First a call between a caller on the
first gate and a callee on the second: the caller's gate is killed (SIGKILL), the caller
reconnects to the second gate and its heartbeats reach the call again; then the consumer
process is killed and started again, and the heartbeats still count; the caller hangs up
through its new gate and the callee is told, with one AVCHAT message. Then a caller whose
gate is killed and who does not come back: after ``[calls] heartbeat_timeout_s`` of silence
the callee gets a ByeNotify naming the silent party.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from google.protobuf.message import Message

from schemas.codes import ClientType, ErrorCode, MsgType, VoipByeReason
from schemas.commands import Cmd
from schemas.ids import UserId
from schemas.pb.coffeechat import message_pb2, voip_pb2
from sdk.client import Client
from sdk.errors import SdkError
from sdk.events import Event, Reconnected
from sdk.protocol import Push
from store.calls import CallState
from tests.chaos.conftest import ChaosSystem
from tests.chaos.gates import GateProcess
from tests.chaos.processes import (
    ROLE_TEST_MARKS,
    WAIT_S,
    wait_serving,
)
from tests.consumers.conftest import EventLog
from tests.waiting import wait_for

log = logging.getLogger(__name__)

pytestmark = ROLE_TEST_MARKS

GROUPS = ("msg", "fanout", "ack", "query", "call")
HEARTBEAT_TIMEOUT_S = 8.0
CALL_SETTINGS = {
    "COFFEEBUS_CALLS__HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
    "COFFEEBUS_CALLS__SWEEP_INTERVAL_S": "0.2",
}


class _Party:
    """A client that records its events and, once started, sends a VoipHeartbeat every
    second through whatever gate it is connected to (skipping while it reconnects)."""

    def __init__(self, system: ChaosSystem, user: UserId, *, reconnect: bool) -> None:
        self.user = user
        self.events = EventLog()
        self.reconnects = 0
        self.client = Client(
            heartbeat_interval=None,
            request_timeout=10.0,
            reconnect=reconnect,
            reconnect_min_delay=0.05,
            reconnect_max_delay=1.0,
            on_event=self._on_event,
        )
        system.clients.append(self.client)  # closed at teardown
        self._system = system
        self._beating: asyncio.Task[None] | None = None

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Reconnected):
            self.reconnects += 1
        self.events.append(event)

    async def login(self, gate: GateProcess, other: GateProcess) -> None:
        await self.client.connect("127.0.0.1", gate.port, alternates=[("127.0.0.1", other.port)])
        await self.client.login(
            self.user, self._system.tokens[self.user], client_type=ClientType.ANDROID
        )

    def pushes(self, command: int) -> list[Message]:
        return [
            e.message
            for e in self.events.events
            if isinstance(e, Push) and e.command_id == command and e.message is not None
        ]

    async def wait_push(self, command: int, count: int = 1) -> list[Message]:
        await self.events.until(lambda: len(self.pushes(command)) >= count, within=WAIT_S)
        return self.pushes(command)

    def start_heartbeats(self) -> None:
        async def beat() -> None:
            while True:
                with contextlib.suppress(SdkError, OSError):
                    await self.client.call_heartbeat()
                await asyncio.sleep(1.0)

        self._beating = asyncio.create_task(beat())

    async def stop_heartbeats(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating


async def _answered_call(caller: _Party, callee: _Party) -> str:
    channel = (await caller.client.call(callee.user)).channel_info.channel_name
    await callee.wait_push(Cmd.VOIP_INVITE_REQ)
    await callee.client.answer(channel)
    await caller.wait_push(Cmd.VOIP_INVITE_REPLY)
    return channel


async def test_call_survives_gate_and_consumer_kills_and_silence_ends_it(
    chaos_system: ChaosSystem,
) -> None:
    system = chaos_system
    consumers = system.process(
        "consumers",
        ["consume", *GROUPS, "--static-member-id", "k1"],
        env_overrides=CALL_SETTINGS,
    )
    consumers.start()
    first, second = GateProcess(system, "g1"), GateProcess(system, "g2")
    await asyncio.gather(first.start(), second.start())
    await wait_serving(system.topology, system.bootstrap, GROUPS, within=WAIT_S)
    calls = system.runtime.calls

    # 1. The caller's gate dies, then the consumers: the call goes on.
    caller = _Party(system, await system.user(), reconnect=True)
    callee = _Party(system, await system.user(), reconnect=True)
    await caller.login(first, second)
    await callee.login(second, first)
    channel = await _answered_call(caller, callee)
    caller.start_heartbeats()
    callee.start_heartbeats()
    try:
        log.warning("SIGKILL gate g1 (the caller's) during call %s", channel)
        first.process.kill()
        await wait_for(
            lambda: caller.reconnects >= 1 and caller.client.endpoint == ("127.0.0.1", second.port),
            within=WAIT_S,
        )
        log.warning("SIGKILL the consumers during call %s", channel)
        consumers.kill()
        consumers.start()
        await wait_serving(system.topology, system.bootstrap, GROUPS, within=WAIT_S)
        restarted = await calls.get(channel)
        assert restarted is not None
        assert restarted.state is CallState.TALKING
        # Heartbeats sent through the new gate reach the call after the restart.
        seen = restarted.caller_hb_ms

        async def caller_heard() -> bool:
            now = await calls.get(channel)
            return now is not None and now.caller_hb_ms > seen

        await wait_for(caller_heard, within=WAIT_S)
    finally:
        await caller.stop_heartbeats()
        await callee.stop_heartbeats()
    rsp = await caller.client.hangup(channel)
    assert ErrorCode(rsp.error_code) is ErrorCode.SUCCESS
    [bye] = await callee.wait_push(Cmd.VOIP_BYE_NOTIFY)
    assert isinstance(bye, voip_pb2.VoipByeNotify)
    assert (bye.user_id, VoipByeReason(bye.bye_reason)) == (caller.user, VoipByeReason.END)
    [avchat] = [
        m
        for m in await callee.wait_push(Cmd.MSG_DATA)
        if isinstance(m, message_pb2.MsgData) and MsgType(m.msg_type) is MsgType.AVCHAT
    ]
    content = json.loads(avchat.msg_data)
    assert (content["hangupUserId"], content["hangupReason"]) == (caller.user, VoipByeReason.END)
    assert content["timeLen"] >= 1  # the call lasted through both kills
    ended = await calls.get(channel)
    assert ended is not None
    assert ended.state is CallState.ENDED

    # 2. A caller whose gate dies and who does not come back: its silence ends the call.
    await first.start()
    gone = _Party(system, await system.user(), reconnect=False)
    stays = _Party(system, await system.user(), reconnect=True)
    await gone.login(first, second)
    await stays.login(second, first)
    channel = await _answered_call(gone, stays)
    stays.start_heartbeats()
    try:
        log.warning("SIGKILL gate g1 (the caller's, no reconnect) during call %s", channel)
        first.process.kill()
        [bye] = await stays.wait_push(Cmd.VOIP_BYE_NOTIFY)
    finally:
        await stays.stop_heartbeats()
    assert isinstance(bye, voip_pb2.VoipByeNotify)
    assert (bye.user_id, VoipByeReason(bye.bye_reason)) == (gone.user, VoipByeReason.END)
    assert bye.channel_info.channel_name == channel
    assert not system.tracebacks(), "\n".join(system.tracebacks())
