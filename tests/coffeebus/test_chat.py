"""The terminal chat client: `ChatSession` driven by typed lines against a real system
(embedded, and Kafka + FerretDB + Redis), and the real `coffeebus chat` process in a pty
exchanging messages with an SDK client."""

from __future__ import annotations

import asyncio
import os
import pty
import sys

import pytest

from coffeebus.chat import ChatSession, Conversation, parse_conversation
from schemas.codes import MsgType, SessionType
from schemas.commands import Cmd
from schemas.pb.coffeechat import message_pb2
from sdk.client import Client
from tests.consumers import conftest as consumer_fixtures
from tests.consumers.conftest import System, next_push
from tests.waiting import wait_for

GROUP = SessionType.GROUP

# The consumer tests' whole-system fixtures (embedded and real), for the chat's tests.
embedded_system = consumer_fixtures.embedded_system
real_system = consumer_fixtures.real_system
system = consumer_fixtures.system


class Screen:
    """A `ChatSession` of a logged-in client, its events pumped, its lines collected."""

    def __init__(self, client: Client) -> None:
        self.lines: list[str] = []
        self.session = ChatSession(client, self.lines.append)
        self._pump = asyncio.create_task(self._events(client))

    async def _events(self, client: Client) -> None:
        async for event in client.events():
            await self.session.handle_event(event)

    async def type(self, line: str) -> list[str]:
        """Type `line`; the lines it rendered."""
        start = len(self.lines)
        await self.session.handle_line(line)
        return self.lines[start:]

    async def shows(self, text: str) -> str:
        """The first line containing `text`, once rendered."""
        await wait_for(lambda: any(text in line for line in self.lines))
        return next(line for line in self.lines if text in line)

    async def close(self) -> None:
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


async def test_single_chat_history_live_messages_and_read_receipts(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    alice_sdk, bob_sdk = await system.login(alice), await system.login(bob)
    screen = Screen(alice_sdk)
    try:
        assert await screen.type("/sessions") == ["no conversations yet"]
        assert (await screen.type("hello?"))[0].startswith("! no conversation is open")
        first = await bob_sdk.send_text(alice, "hi alice")
        await screen.shows(f"[u:{bob}] #{first.server_msg_id} {bob}: hi alice")  # not open
        listed = await screen.type("/sessions")
        assert listed[0] == "1 conversation(s), 1 unread"
        assert f"u:{bob}" in listed[1]
        assert "1 unread" in listed[1]
        assert "hi alice" in listed[1]

        opened = await screen.type(f"/open {bob}")
        assert opened == [f"-- u:{bob} --", f"#{first.server_msg_id} {bob}: hi alice"]
        # what was shown is acknowledged as read: bob's devices hear of it
        notify = await next_push(bob_sdk, Cmd.MSG_READ_NOTIFY)
        assert isinstance(notify.message, message_pb2.MsgDataReadNotify)
        assert (notify.message.user_id, notify.message.msg_id) == (alice, first.server_msg_id)
        assert "0 unread" in (await screen.type("/sessions"))[0]

        sent = await screen.type("hello bob")
        (mine,) = sent
        assert mine.endswith("me: hello bob")
        got = await next_push(bob_sdk, Cmd.MSG_DATA)
        assert isinstance(got.message, message_pb2.MsgData)
        assert (got.message.from_user_id, got.message.msg_data) == (alice, b"hello bob")
        await bob_sdk.read_ack(alice, got.message.server_msg_id)
        await screen.shows(f"✓ read by {bob} up to #{got.message.server_msg_id}")

        live = await bob_sdk.send_text(alice, "live one")
        await screen.shows(f"#{live.server_msg_id} {bob}: live one")
        while True:  # the live message shown in the open chat is read at once
            notify = await next_push(bob_sdk, Cmd.MSG_READ_NOTIFY)
            assert isinstance(notify.message, message_pb2.MsgDataReadNotify)
            if notify.message.msg_id == live.server_msg_id:
                break
        assert await screen.type("/more") == ["(no older messages)"]
        assert (await screen.type("/nope"))[0].startswith("! unknown command")
        await screen.type("/quit")
        assert screen.session.done
    finally:
        await screen.close()


async def test_group_chat_shows_notifications_and_pages(embedded_system: System) -> None:
    system = embedded_system
    await system.start_consumers()
    owner, bob = await system.user(), await system.user()
    owner_sdk = await system.login(owner)
    created = await owner_sdk.create_group("tea", [bob])
    gid = created.group_info.group_id
    for n in range(25):
        await owner_sdk.send_text(gid, f"m{n}", session_type=GROUP)
    bob_sdk = await system.login(bob)  # after the sends: bob reads them as history
    screen = Screen(bob_sdk)
    try:
        page = await screen.type(f"/open g:{gid}")
        assert page[0] == f"-- g:{gid} --"
        assert len(page) == 1 + 20
        assert page[-1].endswith(f"{owner}: m24")
        older = await screen.type("/more")
        assert [line.split(": ", 1)[1] for line in older][-5:] == ["m0", "m1", "m2", "m3", "m4"]
        # The members come in the store's order (a Redis set on real services): any order.
        announced = older[0].split(f"* {owner} created the group with ", 1)
        assert len(announced) == 2, older[0]
        assert set(announced[1].split(", ")) == {str(owner), str(bob)}
        await owner_sdk.update_group(gid, announcement="tea at 4")
        await screen.shows(f"* {owner} updated the group: announcement='tea at 4'")
        await screen.type("on my way")
        got = await next_push(owner_sdk, Cmd.MSG_DATA)
        while int(got.message.msg_type) == MsgType.NOTIFICATION:  # type: ignore[union-attr]
            got = await next_push(owner_sdk, Cmd.MSG_DATA)
        assert isinstance(got.message, message_pb2.MsgData)
        assert (got.message.from_user_id, got.message.msg_data) == (bob, b"on my way")
    finally:
        await screen.close()


async def test_coffeebus_chat_in_a_pty_exchanges_messages(embedded_system: System) -> None:
    system = embedded_system
    await system.start_consumers()
    gate = await system.gate()
    alice, bob = await system.user(), await system.user()
    bob_sdk = await system.login(bob)
    await bob_sdk.send_text(alice, "are you there?")
    main, child = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coffeebus", "chat",
        "--user", str(alice), "--token", system.tokens[alice],
        "--gate", f"127.0.0.1:{gate.tcp_port}",
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
        os.write(main, f"/open {bob}\n".encode())
        await until(b"are you there?")
        os.write(main, b"yes, from a terminal\n")
        got = await next_push(bob_sdk, Cmd.MSG_DATA)
        assert isinstance(got.message, message_pb2.MsgData)
        assert (got.message.from_user_id, got.message.msg_data) == (
            alice,
            b"yes, from a terminal",
        )
        await bob_sdk.send_text(alice, "great")
        await until(b": great")
        os.write(main, b"/quit\n")
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        loop.remove_reader(main)
        os.close(main)
        if process.returncode is None:
            process.kill()
            await process.wait()
