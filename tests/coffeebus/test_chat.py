"""The terminal chat client: `ChatSession` driven by typed lines against a real system
(embedded, and Kafka + FerretDB + Redis), and the real `coffeebus chat` process in a
pseudo-terminal — reading, answering, and riding out a restart of its gate.

What is checked is what people know from the chat apps they use: names rather than ids,
each message once with its time, receipts about *my* messages read by the *other* side,
older messages above newer ones, one line for activity elsewhere, business pushes shown,
and a client that survives a server restart and shows what it missed.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import sys
from collections.abc import Sequence

import pytest

from coffeebus.chat import ChatSession, Conversation, parse_conversation
from schemas.codes import MsgType, SessionType
from schemas.commands import Cmd
from schemas.ids import c2c_conversation_id
from schemas.pb.coffeechat import base_pb2, message_pb2
from sdk.client import Client
from store.ids import UserId
from tests.consumers import conftest as consumer_fixtures
from tests.consumers.apiclient import system_api
from tests.consumers.conftest import System, next_push
from tests.waiting import wait_for

GROUP = SessionType.GROUP
TIME = r"\d\d:\d\d"

# The consumer tests' whole-system fixtures (embedded and real), for the chat's tests.
embedded_system = consumer_fixtures.embedded_system
real_system = consumer_fixtures.real_system
system = consumer_fixtures.system


class Screen:
    """A started `ChatSession` of a logged-in client, its events pumped, its lines kept."""

    def __init__(self, system: System, client: Client) -> None:
        self.lines: list[str] = []

        async def profiles(ids: Sequence[int]) -> dict[int, str]:
            users = await system.runtime.users.list_users([UserId(i) for i in ids])
            return {u.user_id: u.nick_name for u in users}

        self.session = ChatSession(client, self.lines.append, profiles=profiles)
        self._client = client
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> Screen:
        await self.session.start()
        self._pump = asyncio.create_task(self._events(self._client))
        return self

    async def _events(self, client: Client) -> None:
        async for event in client.events():
            await self.session.handle_event(event)

    async def type(self, line: str) -> list[str]:
        """Type `line`; the lines it rendered."""
        start = len(self.lines)
        await self.session.handle_line(line)
        return self.lines[start:]

    async def shows(self, pattern: str) -> str:
        """The first line matching `pattern` (a regex), once rendered."""
        await wait_for(lambda: any(re.search(pattern, line) for line in self.lines))
        return next(line for line in self.lines if re.search(pattern, line))

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self._pump


def test_conversations_parse() -> None:
    assert parse_conversation("42") == Conversation(SessionType.SINGLE, 42)
    assert parse_conversation("u:42") == Conversation(SessionType.SINGLE, 42)
    assert str(parse_conversation(" g:7 ")) == "g:7"
    for bad in ("", "x:1", "g:", "u:0", "g:-1", "abc"):
        with pytest.raises(ValueError, match="not a conversation"):
            parse_conversation(bad)


async def read_notifies(client: Client, system: System) -> list[int]:
    return [
        n.msg_id
        for n in system.pushes(client, Cmd.MSG_READ_NOTIFY)
        if isinstance(n, message_pb2.MsgDataReadNotify)
    ]


async def test_single_chat_names_receipts_the_right_way_and_each_message_once(
    system: System,
) -> None:
    await system.start_consumers()
    alice, bob = await system.user(nick="alice"), await system.user(nick="bob")
    alice_sdk, bob_sdk = await system.login(alice), await system.login(bob)
    screen = await Screen(system, alice_sdk).start()
    try:
        assert screen.lines[-1].startswith("no conversations yet")
        assert (await screen.type("hello?"))[0].startswith("! no conversation is open")
        first = await bob_sdk.send_text(alice, "hi alice")
        # Not open: counted, and summed up in one line, by name.
        await screen.shows(r"^· new messages: bob 1 — /open to read$")
        listed = await screen.type("/sessions")
        assert listed[0] == "1 conversation(s), 1 unread"
        assert re.fullmatch(rf"  bob\s+1 unread\s+{TIME} bob: hi alice", listed[1]), listed

        opened = await screen.type("/open bob")
        assert opened[0] == "── bob ──"
        assert opened[1] == "── Today ──"
        assert re.fullmatch(rf"{TIME} bob: hi alice", opened[2]), opened
        assert len(opened) == 3
        # bob's message was shown: alice's read reaches bob
        await system.wait_pushes(bob_sdk, Cmd.MSG_READ_NOTIFY, count=1)
        assert await read_notifies(bob_sdk, system) == [first.server_msg_id]
        assert "unread" not in (await screen.type("/sessions"))[1]

        # What alice types shows once, when stored, as hers.
        sent = await screen.type("hello bob")
        assert len(sent) == 1
        assert re.fullmatch(rf"{TIME} you: hello bob ✓", sent[0]), sent
        got = await next_push(bob_sdk, Cmd.MSG_DATA)
        assert isinstance(got.message, message_pb2.MsgData)
        assert (got.message.from_user_id, got.message.msg_data) == (alice, b"hello bob")
        # bob's SDK acked it on receipt: alice sees it delivered (DeliveredNotify), once.
        await screen.shows(r"^  ✓✓ delivered to bob$")

        # bob answers; alice has the chat open, shows it and reads it. bob is told of that
        # read — and was never told that alice "read" her own message.
        live = await bob_sdk.send_text(alice, "live one")
        await screen.shows(rf"^{TIME} bob: live one$")
        await system.wait_pushes(bob_sdk, Cmd.MSG_READ_NOTIFY, count=2)
        assert await read_notifies(bob_sdk, system) == [first.server_msg_id, live.server_msg_id]

        # bob reads alice's message: one receipt line under her message, not under his.
        assert not any("read by" in line for line in screen.lines)
        await bob_sdk.read_ack(alice, got.message.server_msg_id)
        await screen.shows(r"^  ✓✓ read by bob$")
        await bob_sdk.read_ack(alice, live.server_msg_id)  # nothing new of alice's to read
        await screen.type("/sessions")  # a round trip: the notify arrived before its answer
        assert sum("read by" in line for line in screen.lines) == 1
        assert sum("delivered to" in line for line in screen.lines) == 1
        # Opened again, the chat says how far bob has it from history alone.
        reopened = await screen.type("/open bob")
        assert reopened[-1] == "  ✓✓ read by bob", reopened

        assert await screen.type("/more") == ["(no older messages)"]
        assert (await screen.type("/nope"))[0].startswith("! unknown command")
        await screen.type("/quit")
        assert screen.session.done
    finally:
        await screen.close()


async def test_call_rings_answers_and_hangs_up_across_two_gates(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(nick="alice"), await system.user(nick="bob")
    alice_sdk = await system.login(alice)
    bob_sdk = await system.login(bob, await system.gate())
    await alice_sdk.send_text(bob, "call me?")
    caller = await Screen(system, alice_sdk).start()
    callee = await Screen(system, bob_sdk).start()
    try:  # (pushes may render between a command and its answer: `in`, not `==`)
        assert "! no call is ringing" in await caller.type("/answer")
        await caller.type("/open bob")
        assert "☎ calling bob…" in await caller.type("/call")
        await callee.shows(r"^☎ alice is calling \(voice call\) — /answer or /hangup$")
        await caller.shows(r"^☎ bob's device is ringing$")  # bob's session rang back (180)
        assert "! already in a call with bob" in await caller.type("/call bob")
        assert "☎ in a call with alice — /hangup to end" in await callee.type("/answer")
        await caller.shows(r"^☎ bob answered — /hangup to end$")
        assert "☎ call with bob ended" in await caller.type("/hangup")
        await callee.shows(r"^☎ alice hung up$")
        # The call's record, in the open conversation, as a line of its own.
        await caller.shows(rf"^{TIME} you: ☎ voice call 0:\d\d ✓$")
        assert caller.session.call is None
        assert callee.session.call is None

        await callee.type("/open alice")
        assert "☎ calling alice…" in await callee.type("/call")
        await caller.shows(r"^☎ bob is calling \(voice call\) — /answer or /hangup$")
        assert "☎ call with bob declined" in await caller.type("/hangup")
        await callee.shows(r"^☎ alice declined$")
        await callee.shows(rf"^{TIME} alice: ☎ declined voice call$")
    finally:
        await caller.close()
        await callee.close()


async def test_a_chat_opened_later_shows_what_was_delivered_meanwhile(system: System) -> None:
    """DeliveredNotify went out while alice's chat client was not running: opening the chat
    shows it from history's message status (RECEIPT)."""
    await system.start_consumers()
    alice, bob = await system.user(nick="alice"), await system.user(nick="bob")
    alice_sdk = await system.login(alice)
    sent = await alice_sdk.send_text(bob, "are you there?")
    await alice_sdk.close()
    # bob was offline when it was sent: he finds it by sync and acks its receipt.
    bob_sdk = await system.login(bob)

    async def in_bobs_inbox() -> bool:
        return len((await bob_sdk.sync(0)).entries) == 1

    await wait_for(in_bobs_inbox)
    (pushed,) = (await bob_sdk.sync(0)).entries
    await bob_sdk.ack_message(
        message_pb2.MsgData(
            from_user_id=alice,
            to_session_id=bob,
            server_msg_id=pushed.msg.server_msg_id,
            session_type=base_pb2.SESSION_TYPE_SINGLE,
        ),
        seq=1,
    )
    conv = c2c_conversation_id(alice, bob)

    async def delivered() -> bool:
        return await system.runtime.deliveries.delivered_seq(bob, conv) == sent.server_msg_id

    await wait_for(delivered)
    screen = await Screen(system, await system.login(alice)).start()
    try:
        opened = await screen.type("/open bob")
        assert re.fullmatch(rf"{TIME} you: are you there\? ✓", opened[-2]), opened
        assert opened[-1] == "  ✓✓ delivered to bob"
    finally:
        await screen.close()


async def test_group_by_name_with_older_messages_above_newer_ones(embedded_system: System) -> None:
    system = embedded_system
    await system.start_consumers()
    owner, bob = await system.user(nick="olga"), await system.user(nick="bob")
    owner_sdk = await system.login(owner)
    created = await owner_sdk.create_group("tea", [bob])
    gid = created.group_info.group_id
    for n in range(25):
        await owner_sdk.send_text(gid, f"m{n}", session_type=GROUP)
    bob_sdk = await system.login(bob)  # after the sends: bob reads them as history
    screen = await Screen(system, bob_sdk).start()
    try:
        assert any(line.startswith("  #tea ") for line in screen.lines), screen.lines
        page = await screen.type("/open #tea")
        assert page[:2] == ["── #tea ──", "── Today ──"]
        assert len(page) == 2 + 20
        assert page[-1].endswith(" olga: m24")
        older = await screen.type("/more")
        # The conversation again, from the older page on, oldest first: the creation notice
        # (names, not ids), then m0 … m24 in order.
        assert older[:2] == ["── #tea: 6 earlier messages ──", "── Today ──"]
        assert re.fullmatch(rf"{TIME} · olga created the group with you", older[2]), older[2]
        assert [line.split(": ", 1)[1] for line in older[3:]] == [f"m{n}" for n in range(25)]
        assert await screen.type("/more") == ["(no older messages)"]

        await owner_sdk.update_group(gid, announcement="tea at 4")
        await screen.shows(rf"^{TIME} · olga updated the group: announcement='tea at 4'$")
        await screen.type("on my way")
        got = await next_push(owner_sdk, Cmd.MSG_DATA)
        while int(got.message.msg_type) == MsgType.NOTIFICATION:  # type: ignore[union-attr]
            got = await next_push(owner_sdk, Cmd.MSG_DATA)
        assert isinstance(got.message, message_pb2.MsgData)
        assert (got.message.from_user_id, got.message.msg_data) == (bob, b"on my way")
    finally:
        await screen.close()


async def test_a_chat_room_joined_talked_in_and_closed(embedded_system: System) -> None:
    system = embedded_system
    await system.start_consumers()
    async with system_api(system) as api:
        response = await api.post("/v1/rooms", json={"name": "keynote", "history": 5})
    room = response.json()["room_id"]
    alice, bob = await system.user(nick="alice"), await system.user(nick="bob")
    bob_sdk = await system.login(bob)
    await bob_sdk.join_room(room)
    for n in range(7):
        await bob_sdk.send_room(room, f"early {n}")
    screen = await Screen(system, await system.login(alice)).start()
    try:
        joined = await screen.type(f"/join {room}")
        assert joined[0] == "── room keynote · 2 here ──"
        assert [line.split(": ", 1)[1] for line in joined[1:]] == [
            f"early {n}" for n in range(2, 7)
        ]
        assert re.fullmatch(rf"{TIME} bob: early 2", joined[1]), joined[1]
        said = await screen.type("hello room")
        [line] = said
        assert re.fullmatch(rf"{TIME} you: hello room", line), line
        got = await next_push(bob_sdk, Cmd.ROOM_MSG)
        assert got.message.msg_data == b"hello room"  # type: ignore[union-attr]
        await bob_sdk.send_room(room, "welcome")
        await screen.shows(rf"^{TIME} bob: welcome$")
        assert await screen.type("/join nope") == [
            "! join which room? /join ROOM_ID (the business gives the id)"
        ]
        async with system_api(system) as api:
            assert (await api.delete(f"/v1/rooms/{room}")).status_code == 200
        await screen.shows(rf"^! you are out of room {room}: it was closed$")
        assert await screen.type("/leave") == ["! not in a room"]
    finally:
        await screen.close()


async def test_activity_elsewhere_is_one_line_and_business_pushes_show(
    embedded_system: System,
) -> None:
    system = embedded_system
    await system.start_consumers()
    await system.gate()
    alice, bob, carol = (
        await system.user(nick="alice"),
        await system.user(nick="bob"),
        await system.user(nick="carol"),
    )
    alice_sdk, carol_sdk = await system.login(alice), await system.login(carol)
    screen = await Screen(system, alice_sdk).start()
    try:
        await screen.type(f"/open {bob}")  # by id: bob never wrote to alice
        before = len(screen.lines)
        for n in range(25):
            await carol_sdk.send_text(alice, f"c{n}")
        await screen.shows(r"^· new messages: carol 25 — /open to read$")
        elsewhere = screen.lines[before:]
        # One summary (two if the machine paused in the middle of the burst), no line per
        # message; the counts are since carol's chat was last open.
        assert all(line.startswith("· new messages: carol ") for line in elsewhere), elsewhere
        assert len(elsewhere) <= 2

        async with system_api(system) as api:
            pushed = await api.post(
                "/v1/push",
                json={
                    "to_user_ids": [alice],
                    "msg_type": 77,
                    "msg_data": '{"coupon": 5}',
                    "channel": "shop",
                },
            )
            assert pushed.status_code == 200, pushed.text
        await screen.shows(r'^★ shop \(type 77\): \{"coupon": 5\}$')

        opened = await screen.type("/open carol")
        assert opened[0] == "── carol ──"
        assert len(opened) == 2 + 20  # the latest page
    finally:
        await screen.close()


async def test_a_gate_restart_is_ridden_out_and_missed_messages_shown(
    embedded_system: System,
) -> None:
    system = embedded_system
    await system.start_consumers()
    gate = await system.gate()
    other_gate = await system.gate()
    alice, bob = await system.user(nick="alice"), await system.user(nick="bob")
    # A client that reconnects (the fixture's do not), soon.
    alice_sdk = Client(heartbeat_interval=None, reconnect_min_delay=0.05, reconnect_max_delay=0.2)
    system.clients.append(alice_sdk)  # closed at teardown
    await alice_sdk.connect("127.0.0.1", gate.tcp_port)
    await alice_sdk.login(alice, system.tokens[alice])
    bob_sdk = await system.login(bob, other_gate)
    screen = await Screen(system, alice_sdk).start()
    try:
        await screen.type(f"/open {bob}")
        await bob_sdk.send_text(alice, "before")
        await screen.shows(rf"^{TIME} bob: before$")
        await gate.stop()  # drains: a KickNotify SERVER_SHUTDOWN, then the close
        await screen.shows(r"^! the server is going away: reconnecting…$")
        assert not screen.session.done
        await bob_sdk.send_text(alice, "while you were away")
        await bob_sdk.send_text(alice, "still away?")
        await system.gate(tcp_port=gate.tcp_port)  # back, on the same port
        await screen.shows(r"^! reconnected: 2 missed message\(s\)$")
        shown = [line for line in screen.lines if re.match(rf"{TIME} bob: ", line)]
        assert [line.split(": ", 1)[1] for line in shown] == [
            "before",
            "while you were away",
            "still away?",
        ]
        await bob_sdk.send_text(alice, "welcome back")
        await screen.shows(rf"^{TIME} bob: welcome back$")
    finally:
        await screen.close()


async def test_coffeebus_chat_in_a_pty_chats_and_survives_a_gate_restart(
    embedded_system: System,
) -> None:
    system = embedded_system
    await system.start_consumers()
    gate = await system.gate()
    other_gate = await system.gate()
    alice, bob = await system.user(nick="alice"), await system.user(nick="bob")
    bob_sdk = await system.login(bob, other_gate)
    await bob_sdk.send_text(alice, "are you there?")
    main, child = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coffeebus", "chat",
        "--user", str(alice), "--token", system.tokens[alice],
        "--gate", f"127.0.0.1:{gate.tcp_port}", "--api", "http://127.0.0.1:1",
        stdin=child, stdout=child, stderr=child,
    )  # fmt: skip
    os.close(child)
    os.set_blocking(main, False)  # read only what is there: the gate runs in this loop
    output = bytearray()
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(main, readable.set)

    async def until(text: bytes) -> None:
        async with asyncio.timeout(30):
            while text not in output:
                await readable.wait()
                readable.clear()
                try:
                    output.extend(os.read(main, 65536))
                except BlockingIOError:
                    continue
                except OSError:  # the child closed the pty
                    raise AssertionError(f"{text!r} never came: {bytes(output)!r}") from None

    try:
        await until(b"1 unread")
        os.write(main, b"/open bob\n")
        await until(b"bob: are you there?")
        mark = len(output)
        os.write(main, b"yes, from a terminal\n")
        await until(b"you: yes, from a terminal")
        # The terminal echoed the typed line; the client erased it before writing the
        # message once, stored, with its time.
        typed = bytes(output[mark:])
        assert typed.index(b"yes, from a terminal") < typed.index(b"\x1b[1A\x1b[2K")
        got = await next_push(bob_sdk, Cmd.MSG_DATA)
        assert isinstance(got.message, message_pb2.MsgData)
        assert (got.message.from_user_id, got.message.msg_data) == (
            alice,
            b"yes, from a terminal",
        )

        await gate.stop()
        await until(b"reconnecting")
        await bob_sdk.send_text(alice, "missed me?")
        await system.gate(tcp_port=gate.tcp_port)
        await until(b"! reconnected: 1 missed message(s)")
        await until(b"bob: missed me?")
        await bob_sdk.send_text(alice, "great")
        await until(b"bob: great")
        os.write(main, b"/quit\n")
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        loop.remove_reader(main)
        os.close(main)
        if process.returncode is None:
            process.kill()
            await process.wait()
