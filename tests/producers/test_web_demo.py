"""The web demo client (producers/demo.py, producers/static/demo/) end to end, in Chromium.

A gate (WebSocket), the HTTP API and every consumer group run in this event loop (the
embedded `System` of tests/consumers/conftest.py); Playwright drives Debian's chromium,
launched by path with the flags docs/web-demo.md lists (`services/services.sh browser`
installs it; nothing downloads a browser). Two pages log in as two users and chat, single and
group, both ways; the session list's unread counts, history and read receipts are checked in
the pages, and screenshots are saved under the test's tmp_path.

The page's frame codec and command table are checked byte for byte against the Python ones
(`schemas.frame`, `schemas.commands`), and its protobuf encoding against the Python
protobuf runtime, 64-bit ids included.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from litestar import Litestar
from playwright.async_api import Browser, Page, expect

from coffeebus.settings import ApiSettings
from gateway.server import Gate
from producers.app import Pipeline, create_app
from producers.vendor import check as check_vendor
from schemas.commands import Cmd, spec
from schemas.frame import encode_frame
from schemas.pb.coffeechat import base_pb2, message_pb2, voip_pb2
from sdk.client import Client
from tests.consumers.conftest import System, embedded_system
from tests.producers.browser import ApiServer, new_page

__all__ = ["embedded_system"]  # the fixture, shared with the consumer tests


def demo_app(system: System) -> Litestar:
    """The API app on `system` as `coffeebus run` wires it (the pipeline: /demo/users)."""
    runtime = system.runtime
    return create_app(
        ApiSettings(),
        runtime.users,
        runtime.routes,
        pipeline=Pipeline(
            bus=runtime.bus,
            topology=runtime.topology,
            groups=runtime.groups,
            messages=runtime.messages,
            group_limits=runtime.group_limits,
        ),
    )


def demo_api(system: System) -> ApiServer:
    return ApiServer(system.runtime.users, system.runtime.routes, app=demo_app(system))


async def shot(page: Page, path: Path) -> None:
    """A screenshot into the test's directory, and into $COFFEEBUS_DEMO_SCREENSHOTS (e.g.
    docs/img) when set: docs/web-demo.md shows these."""
    await page.screenshot(path=path)
    if folder := os.environ.get("COFFEEBUS_DEMO_SCREENSHOTS"):
        shutil.copyfile(path, Path(folder) / path.name)


async def login(page: Page, api: ApiServer, gate: Gate, user_id: int, token: str) -> None:
    await page.goto(f"{api.url}/demo")
    await expect(page.locator("#login-button")).to_be_enabled()
    # The page asked the API where the gates are (GET /demo/gate).
    await expect(page.locator("#gate-url")).to_have_value(f"ws://127.0.0.1:{gate.ws_port}")
    await page.fill("#user-id", str(user_id))
    await page.fill("#token", token)
    await page.click("#login-button")
    await expect(page.locator("body")).to_have_attribute("data-user", str(user_id))
    await expect(page.locator("#login")).to_be_hidden()
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("body")).to_have_attribute("data-connection", "up")


async def open_conversation(page: Page, session_type: int, session_id: int) -> None:
    await page.select_option("#open-type", str(session_type))
    await page.fill("#open-id", str(session_id))
    await page.click("#open-form button")
    await expect(page.locator("#chat")).to_have_attribute(
        "data-session", f"{session_type}:{session_id}"
    )


async def send(page: Page, text: str) -> None:
    """Type and send `text`; return once the server acked it (it is stored)."""
    await page.fill("#text", text)
    await page.click("#send")
    mine = page.locator("#messages li.mine").filter(has_text=text)
    # Acked: the server's id replaces 0 ("sent", or already "delivered" or "read" if the
    # peer's page is up or has it open).
    await expect(mine).to_have_attribute("data-server-msg-id", re.compile(r"^[1-9][0-9]*$"))
    await expect(mine.locator(".state")).to_have_text(re.compile("^(sent|delivered|read.*)$"))


def session(page: Page, session_type: int, session_id: int) -> Any:
    return page.locator(f'#sessions li[data-session="{session_type}:{session_id}"]')


TIME = re.compile(r"^\d\d:\d\d( [AP]M)?$")


async def test_two_users_chat_single_and_group(
    embedded_system: System, browser: Browser, tmp_path: Path
) -> None:
    system = embedded_system
    gate = await system.gate()
    await system.start_consumers()
    alice = await system.user(nick="alice")
    bob = await system.user(nick="bob")
    carol = await system.user(nick="carol")
    async with demo_api(system) as api:
        errors: list[str] = []
        a, b = await new_page(browser, errors), await new_page(browser, errors)
        await login(a, api, gate, alice, system.tokens[alice])
        await login(b, api, gate, bob, system.tokens[bob])
        await expect(a.locator("#me")).to_contain_text("alice")

        # -- single chat: alice -> bob twice; bob sees two unread, opens, reads, answers
        await open_conversation(a, 1, bob)
        await send(a, "hello bob")
        await send(a, "are you there?")
        # names, not ids: bob's list shows alice by name, her initial, her last message
        await expect(session(b, 1, alice)).to_have_attribute("data-unread", "2")
        await expect(session(b, 1, alice).locator(".name")).to_have_text("alice")
        await expect(session(b, 1, alice).locator(".avatar")).to_have_text("A")
        await expect(session(b, 1, alice).locator(".preview")).to_have_text("alice: are you there?")
        await expect(session(b, 1, alice).locator(".when")).to_have_text(TIME)
        await expect(b.locator("#total-unread")).to_have_text("2")
        await expect(b).to_have_title("(2) CoffeeBus web demo")
        # alice's own messages were never "read" by alice: bob was not told so. bob's page
        # has them (it acked their pushes): delivered, two ticks.
        await expect(a.locator("#messages li.mine .state")).to_have_text(["delivered", "delivered"])
        await expect(a.locator("#messages li.mine .ticks")).to_have_text(["✓✓", "✓✓"])

        await session(b, 1, alice).click()
        await expect(b.locator("#messages li.theirs .text")).to_have_text(
            ["hello bob", "are you there?"]
        )
        # a day line before the first message, a time under each
        await expect(b.locator("#messages li").first).to_have_text("Today")
        await expect(b.locator("#messages li.theirs time").first).to_have_text(TIME)
        await expect(b.locator("#chat-title")).to_have_text("alice")
        # bob's read ack reaches alice as a read notify: both her messages show "read"
        await expect(a.locator("#messages li.mine .state")).to_have_text(["read", "read"])
        await expect(session(b, 1, alice)).to_have_attribute("data-unread", "0")
        await expect(b).to_have_title("CoffeeBus web demo")

        await send(b, "hi alice")
        await expect(a.locator("#messages li.theirs .text")).to_have_text(["hi alice"])
        # alice has the conversation open: she reads it as it arrives, and bob sees that
        await expect(b.locator("#messages li.mine .state")).to_have_text(["read"])
        await expect(session(a, 1, bob)).to_have_attribute("data-unread", "0")
        await expect(a.locator("#chat-title")).to_have_text("bob")
        await shot(b, tmp_path / "web-demo-chat.png")

        # -- group: alice creates it with bob and carol, both write, both see the other
        await a.fill("#group-name", "coffee")
        await a.fill("#group-members", f"{bob}, {carol}")
        await a.click("#group-form button")
        await expect(a.locator("#chat")).to_have_attribute("data-session", re.compile("^2:"))
        group_key = await a.locator("#chat").get_attribute("data-session")
        assert group_key is not None
        assert group_key.startswith("2:")
        group = int(group_key.split(":")[1])
        await expect(a.locator("#chat-title")).to_have_text("# coffee")
        # the members by name, carol's from the API (no chat with her: the protocol has none)
        await expect(a.locator("#messages li.notice")).to_have_text(
            "You created the group “coffee” with bob and carol"
        )
        await send(a, "hello group")

        # bob: alice's message is unread in the group's session; the creation notice is
        # shown but never counts as unread (docs/protocol-extensions.md, issue 14)
        await expect(session(b, 2, group)).to_have_attribute("data-unread", "1")
        await expect(session(b, 2, group).locator(".name")).to_have_text("# coffee")
        await session(b, 2, group).click()
        await expect(b.locator("#messages li.notice")).to_have_text(
            "alice created the group “coffee” with you and carol"
        )
        await expect(b.locator("#messages li.theirs .text")).to_have_text(["hello group"])
        await expect(b.locator("#messages li.theirs .from")).to_have_text(["alice"])
        # group read state: bob read it, carol (offline) not yet — "read by 1 of 2"
        mine = a.locator("#messages li.mine").filter(has_text="hello group")
        await expect(mine.locator(".state")).to_have_text("read by 1 of 2")
        await send(b, "hi all")
        await expect(a.locator("#messages li.theirs .text")).to_have_text(["hi all"])
        await expect(session(b, 2, group)).to_have_attribute("data-unread", "0")
        await expect(session(b, 1, alice)).to_have_attribute("data-unread", "0")

        # carol was offline: the group's messages wait in her history, in order; she reads
        # them and alice's message is read by everyone
        carol_client = await system.login(carol)
        history = await carol_client.history(group, session_type=2)  # type: ignore[arg-type]
        texts = [m.msg_data.decode() for m in history.msg_list if m.msg_type == 1]
        assert texts == ["hello group", "hi all"]
        await carol_client.read_ack(group, history.msg_list[-1].server_msg_id, session_type=2)  # type: ignore[arg-type]
        await expect(mine.locator(".state")).to_have_text("read by all 2")

        await shot(a, tmp_path / "web-demo-group.png")
        await shot(b, tmp_path / "web-demo.png")
        assert (tmp_path / "web-demo.png").stat().st_size > 10_000
        assert errors == []


async def receipt(client: Client, info: base_pb2.MsgInfo) -> None:
    """`client` acks the receipt of `info` (a message it found by sync), as for a push."""
    pushed = message_pb2.MsgData(
        from_user_id=info.from_user_id,
        to_session_id=info.to_session_id,
        server_msg_id=info.server_msg_id,
        session_type=info.session_type,
    )
    await client.ack_message(pushed, seq=1)


async def test_ticks_say_sent_delivered_and_read_and_survive_a_reload(
    embedded_system: System, browser: Browser, tmp_path: Path
) -> None:
    """✓ sent, ✓✓ delivered (DeliveredNotify 0x0820), ✓✓ read in colour (MsgDataReadNotify);
    a page loaded afterwards shows the same from history's message status."""
    system = embedded_system
    gate = await system.gate()
    await system.start_consumers()
    alice = await system.user(nick="alice")
    bob = await system.user(nick="bob")
    async with demo_api(system) as api:
        errors: list[str] = []
        a = await new_page(browser, errors)
        await login(a, api, gate, alice, system.tokens[alice])
        await open_conversation(a, 1, bob)
        await send(a, "one")
        await send(a, "two")
        mine = a.locator("#messages li.mine")
        # bob is offline: stored, not delivered
        await expect(mine.locator(".state")).to_have_text(["sent", "sent"])
        await expect(mine.locator(".ticks")).to_have_text(["✓", "✓"])

        # bob's phone comes online, finds them by sync and acks the first one's receipt
        bob_sdk = await system.login(bob, auto_ack=False)
        entries = (await bob_sdk.sync(0)).entries
        assert [e.msg.msg_data for e in entries] == [b"one", b"two"]
        first = entries[0].msg
        await receipt(bob_sdk, first)
        await expect(mine.locator(".state")).to_have_text(["delivered", "sent"])
        await expect(mine.locator(".ticks")).to_have_text(["✓✓", "✓"])
        await expect(mine.first).to_have_attribute("data-tick", "delivered")

        # A page loaded now learns it from history (msg_status RECEIPT).
        await a.reload()
        await login(a, api, gate, alice, system.tokens[alice])
        await open_conversation(a, 1, bob)
        await expect(mine.locator(".state")).to_have_text(["delivered", "sent"])

        # bob's phone gets the second one too and reads the first; alice sends a third:
        # one of each, live and after another reload
        second = entries[1].msg
        await receipt(bob_sdk, second)
        await bob_sdk.read_ack(alice, first.server_msg_id)
        await expect(mine.locator(".state")).to_have_text(["read", "delivered"])
        await send(a, "three")
        await expect(mine.locator(".state")).to_have_text(["read", "delivered", "sent"])
        await expect(mine.locator(".ticks")).to_have_text(["✓✓", "✓✓", "✓"])
        await expect(mine.first).to_have_attribute("data-tick", "read")
        blue = "rgb(29, 143, 224)"
        await expect(mine.first.locator(".ticks")).to_have_css("color", blue)
        await expect(mine.nth(1).locator(".ticks")).not_to_have_css("color", blue)
        await shot(a, tmp_path / "web-demo-ticks.png")
        await a.reload()
        await login(a, api, gate, alice, system.tokens[alice])
        await open_conversation(a, 1, bob)
        await expect(mine.locator(".state")).to_have_text(["read", "delivered", "sent"])
        assert errors == []


async def test_typing_shows_and_a_sent_message_can_be_revoked(
    embedded_system: System, browser: Browser, tmp_path: Path
) -> None:
    system = embedded_system
    gate = await system.gate()
    await system.start_consumers()
    alice, bob = await system.user(nick="alice"), await system.user(nick="bob")
    async with demo_api(system) as api:
        errors: list[str] = []
        a, b = await new_page(browser, errors), await new_page(browser, errors)
        await login(a, api, gate, alice, system.tokens[alice])
        await login(b, api, gate, bob, system.tokens[bob])
        await open_conversation(a, 1, bob)
        await send(a, "coffee?")
        await session(b, 1, alice).click()
        await expect(b.locator("#chat-title")).to_have_text("alice")

        await a.locator("#text").press_sequentially("on my w")
        await expect(b.locator("#typing")).to_have_text("alice is typing…")
        await shot(b, tmp_path / "web-demo-typing.png")
        await a.locator("#text").fill("")  # cleared: "stopped"
        await a.locator("#text").dispatch_event("input")
        await expect(b.locator("#typing")).to_be_hidden()
        await a.locator("#text").press_sequentially("oops")
        await expect(b.locator("#typing")).to_be_visible()
        await send(a, "oops, wrong chat")
        await expect(b.locator("#typing")).to_be_hidden()  # the message came: no more typing
        await expect(b.locator("#messages li.theirs .text")).to_have_text(
            ["coffee?", "oops, wrong chat"]
        )

        # revoke: gone for both, in place; the session list says so too
        mine = a.locator("#messages li.mine").filter(has_text="oops, wrong chat")
        await mine.locator("button.revoke").click()
        await expect(a.locator("#messages li.mine .text")).to_have_text(
            ["coffee?", "You revoked a message"]
        )
        await expect(b.locator("#messages li.theirs .text")).to_have_text(
            ["coffee?", "alice revoked a message"]
        )
        await expect(session(b, 1, alice).locator(".preview")).to_have_text("a message was revoked")
        # and it stays revoked in the history
        await open_conversation(b, 1, alice)
        await expect(b.locator("#messages li.revoked .text")).to_have_text(
            ["alice revoked a message"]
        )
        await shot(b, tmp_path / "web-demo-revoked.png")
        assert errors == []


async def test_a_call_rings_is_answered_and_hung_up_both_ways(
    embedded_system: System, browser: Browser, tmp_path: Path
) -> None:
    """Signalling only (no media): the page calls, rings, answers and hangs up against an
    SDK client on another gate, and shows the call's record in the conversation."""
    system = embedded_system
    gate = await system.gate()
    await system.start_consumers()
    alice, bob = await system.user(nick="alice"), await system.user(nick="bob")
    bob_sdk = await system.login(bob, await system.gate())
    await bob_sdk.send_text(alice, "call me?")
    async with demo_api(system) as api:
        errors: list[str] = []
        a = await new_page(browser, errors)
        await login(a, api, gate, alice, system.tokens[alice])
        await session(a, 1, bob).click()
        await expect(a.locator("#chat-title")).to_have_text("bob")

        # alice calls; bob's device rings back, answers, and hangs up
        await a.click("#call")
        await expect(a.locator("#call-text")).to_have_text("Calling bob…")
        [invite] = await system.wait_pushes(bob_sdk, Cmd.VOIP_INVITE_REQ)
        assert isinstance(invite, voip_pb2.VoipInviteReq)
        assert invite.creator_user_id == alice
        channel = invite.channel_info.channel_name
        await bob_sdk.ringing(channel)
        await expect(a.locator("#call-text")).to_have_text("Ringing bob…")
        await bob_sdk.answer(channel)
        await expect(a.locator("#call-text")).to_have_text("In a call with bob")
        await expect(a.locator("#call")).to_be_disabled()
        await bob_sdk.hangup(channel)
        await expect(a.locator("#call-text")).to_have_text("bob hung up")
        await expect(a.locator("#call-hangup")).to_be_hidden()
        await expect(a.locator("#messages li .text").last).to_have_text(
            re.compile(r"^☎ voice call 0:\d\d$")
        )

        # bob calls; the page rings (and says so to bob), alice answers, then hangs up
        trying = await bob_sdk.call(alice)
        channel = trying.channel_info.channel_name
        await expect(a.locator("#call-text")).to_have_text("bob is calling (voice call)")
        await expect(a.locator("#call-bar")).to_have_attribute("data-phase", "incoming")
        [ringing] = await system.wait_pushes(bob_sdk, Cmd.VOIP_INVITE_REPLY)
        assert isinstance(ringing, voip_pb2.VoipInviteReply)
        assert ringing.rsp_code == voip_pb2.INVITE_RSP_CODE_RINGING
        await shot(a, tmp_path / "web-demo-call.png")
        await a.click("#call-answer")
        await expect(a.locator("#call-text")).to_have_text("In a call with bob")
        answered = (await system.wait_pushes(bob_sdk, Cmd.VOIP_INVITE_REPLY, count=2))[1]
        assert isinstance(answered, voip_pb2.VoipInviteReply)
        assert answered.rsp_code == voip_pb2.INVITE_RSP_CODE_OK
        await a.click("#call-hangup")
        await expect(a.locator("#call-text")).to_have_text("Call ended")
        [bye] = await system.wait_pushes(bob_sdk, Cmd.VOIP_BYE_NOTIFY)
        assert isinstance(bye, voip_pb2.VoipByeNotify)
        assert (bye.user_id, bye.bye_reason) == (alice, voip_pb2.VOIP_BYE_REASON_END)
        assert bye.channel_info.channel_name == channel
        await expect(a.locator("#messages li .text")).to_have_count(3)
        assert errors == []


async def test_a_phone_sees_one_column_chats_then_the_chat(
    embedded_system: System, browser: Browser, tmp_path: Path
) -> None:
    system = embedded_system
    gate = await system.gate()
    await system.start_consumers()
    alice, bob = await system.user(nick="alice"), await system.user(nick="Bob Brown")
    bob_sdk = await system.login(bob)
    await bob_sdk.send_text(alice, "lunch at noon? " * 6)
    async with demo_api(system) as api:
        errors: list[str] = []
        phone = await new_page(browser, errors, width=390, height=844, is_mobile=True)
        await login(phone, api, gate, alice, system.tokens[alice])

        async def fits() -> None:
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width} px wide on a 390 px screen"
            header = await phone.locator("header").bounding_box()
            assert header is not None
            assert header["height"] < 60, "the header wraps"

        # the chats fill the screen; the chat pane waits
        await expect(session(phone, 1, bob)).to_be_visible()
        await expect(session(phone, 1, bob).locator(".avatar")).to_have_text("BB")
        await expect(phone.locator("#chat")).to_be_hidden()
        await fits()
        await shot(phone, tmp_path / "web-demo-phone-chats.png")

        await session(phone, 1, bob).click()
        await expect(phone.locator("#chat")).to_be_visible()
        await expect(phone.locator("aside")).to_be_hidden()
        await expect(phone.locator("#messages li.theirs .text")).to_have_count(1)
        await send(phone, "yes!")
        await fits()
        await shot(phone, tmp_path / "web-demo-phone-chat.png")

        await phone.click("#back")
        await expect(phone.locator("aside")).to_be_visible()
        await expect(phone.locator("#chat")).to_be_hidden()
        assert errors == []


async def test_login_problems_are_said_in_words_and_the_page_has_a_favicon(
    embedded_system: System, browser: Browser, tmp_path: Path
) -> None:
    system = embedded_system
    gate = await system.gate()
    alice = await system.user(nick="alice")
    async with demo_api(system) as api:
        errors: list[str] = []
        page = await new_page(browser, errors)
        await page.goto(f"{api.url}/demo")
        await expect(page.locator("#login-button")).to_be_enabled()
        icon = await page.locator('link[rel="icon"]').get_attribute("href")
        assert icon is not None
        fetched = await page.request.get(f"{api.url}{icon}")
        assert fetched.status == 200
        assert fetched.headers["content-type"].startswith("image/svg+xml")

        await page.fill("#user-id", str(alice))
        await page.fill("#token", "not-the-token")
        await page.click("#login-button")
        problem = page.locator("#login-error")
        await expect(problem).to_be_visible()
        await expect(problem).to_contain_text("That user id and token do not match")
        await expect(problem).not_to_contain_text("login_invalid")
        await shot(page, tmp_path / "web-demo-login-error.png")

        await page.fill("#gate-url", "ws://127.0.0.1:1")
        await page.fill("#token", system.tokens[alice])
        await page.click("#login-button")
        await expect(problem).to_contain_text("Cannot reach the gate at ws://127.0.0.1:1")

        await page.fill("#gate-url", f"ws://127.0.0.1:{gate.ws_port}")
        await page.click("#login-button")
        await expect(page.locator("#app")).to_be_visible()
        await expect(problem).to_be_hidden()
        assert errors == []


async def test_after_a_server_restart_the_page_reconnects_and_catches_up(
    embedded_system: System, browser: Browser, tmp_path: Path
) -> None:
    system = embedded_system
    await system.start_consumers()
    gate = await system.gate()
    other = await system.gate()
    alice, bob = await system.user(nick="alice"), await system.user(nick="bob")
    bob_sdk = await system.login(bob, other)
    async with demo_api(system) as api:
        errors: list[str] = []
        page = await new_page(browser, errors)
        await login(page, api, gate, alice, system.tokens[alice])
        await open_conversation(page, 1, bob)
        await bob_sdk.send_text(alice, "before")
        await expect(page.locator("#messages li.theirs .text")).to_have_text(["before"])

        await gate.stop()  # the page's gate drains and goes away
        await expect(page.locator("#offline")).to_be_visible()
        await expect(page.locator("body")).to_have_attribute("data-connection", "reconnecting")
        await bob_sdk.send_text(alice, "while you were away")
        await bob_sdk.send_text(alice, "still there?")
        await shot(page, tmp_path / "web-demo-reconnecting.png")

        await system.gate(tcp_port=gate.tcp_port, ws_port=gate.ws_port)  # back, same ports
        await expect(page.locator("body")).to_have_attribute("data-connection", "up")
        await expect(page.locator("#offline")).to_be_hidden()
        # what was missed came by sync, in order, and is read (bob is told)
        await expect(page.locator("#messages li.theirs .text")).to_have_text(
            ["before", "while you were away", "still there?"]
        )
        notifies = await system.wait_pushes(bob_sdk, Cmd.MSG_READ_NOTIFY, count=2)
        assert notifies[-1].msg_id >= 3  # type: ignore[attr-defined]
        await bob_sdk.send_text(alice, "welcome back")
        await expect(page.locator("#messages li.theirs .text").last).to_have_text("welcome back")
        assert errors == []


async def test_page_codec_matches_the_python_protocol(
    embedded_system: System, browser: Browser
) -> None:
    """Frames, the command table and protobuf bodies, byte for byte as the server's."""
    async with demo_api(embedded_system) as api:
        errors: list[str] = []
        page = await new_page(browser, errors)
        await page.goto(f"{api.url}/demo")
        await expect(page.locator("#login-button")).to_be_enabled()
        big = (1 << 64) - 2  # above 2**53: exact only as a Long
        result = await page.evaluate(
            """async (big) => {
              const p = await import("/demo/static/protocol.js");
              const codec = await p.loadSchemas();
              const body = codec.encode(p.Cmd.MSG_DATA, {
                from_user_id: big, to_session_id: "1002", client_msg_id: "c-1",
                create_time: -5, msg_type: p.MsgType.TEXT, session_type: p.SessionType.SINGLE,
                msg_data: new TextEncoder().encode("héllo"),
              });
              const frame = p.encodeFrame(p.Cmd.MSG_DATA, 65535, body);
              const back = p.decodeFrame(frame);
              return {
                cmd: p.Cmd, body: p.BODY, response: p.RESPONSE,
                frame: Array.from(frame),
                decoded: {...back, body: Array.from(back.body)},
                message: codec.decode(back.commandId, back.body),
                seqAfterMax: p.nextSeq(65535),
              };
            }""",
            str(big),
        )
        assert errors == []

    for name, value in result["cmd"].items():
        assert Cmd[name] == value, name
    for cmd, message in result["body"].items():
        assert spec(int(cmd)).name == message, hex(int(cmd))
    for cmd, response in result["response"].items():
        assert spec(int(cmd)).response == response, hex(int(cmd))

    expected_body = message_pb2.MsgData(
        from_user_id=big,
        to_session_id=1002,
        client_msg_id="c-1",
        create_time=-5,
        msg_type=1,  # type: ignore[arg-type]
        session_type=1,  # type: ignore[arg-type]
        msg_data="héllo".encode(),
    ).SerializeToString()
    assert bytes(result["frame"]) == encode_frame(int(Cmd.MSG_DATA), 65535, expected_body)
    assert result["decoded"] == {
        "length": 16 + len(expected_body),
        "version": 1,
        "flag": 0,
        "serviceId": 0,
        "commandId": int(Cmd.MSG_DATA),
        "seq": 65535,
        "reserved": 0,
        "body": list(expected_body),
    }
    assert result["message"]["from_user_id"] == str(big)
    assert result["message"]["create_time"] == -5
    assert result["seqAfterMax"] == 1


def test_vendored_libraries_match_the_lock_file() -> None:
    """vendor/ is what `make vendor` makes from package-lock.json, untouched."""
    assert check_vendor() == []
