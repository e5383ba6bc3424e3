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

import asyncio
import re
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect

from coffeebus.settings import ApiSettings
from gateway.server import Gate
from producers.app import create_app
from producers.demo_vendor import check as check_vendor
from schemas.commands import Cmd, spec
from schemas.frame import encode_frame
from schemas.pb.coffeechat import message_pb2
from store.routes import RouteStore
from store.users import UserStore
from tests.consumers.conftest import System, embedded_system
from tests.waiting import wait_for

__all__ = ["embedded_system"]  # the fixture, shared with the consumer tests

#: SERVICES.md, "Browsers for the web demo tests"; Playwright adds --headless and a fresh
#: --user-data-dir itself.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long the pages wait for something the servers do (a push, a response).
UI_WAIT_MS = 20_000


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Debian's chromium is not installed: run `bash services/services.sh browser` "
            "(`make test` does it through `services.sh up`)",
            pytrace=False,
        )
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    expect.set_options(timeout=UI_WAIT_MS)  # for `expect(...)` (5 s by default)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


class ApiServer:
    """The API application served by uvicorn on a free loopback port, in this loop."""

    def __init__(self, users: UserStore, routes: RouteStore) -> None:
        self._app = create_app(ApiSettings(), users, routes)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(
            uvicorn.Config(self._app, log_config=None, access_log=False, lifespan="on")
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ApiServer:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        await wait_for(lambda: self._server.started or self._task is None or self._task.done())
        assert self._server.started, "the API did not start"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._sock.close()


async def new_page(browser: Browser, errors: list[str]) -> Page:
    """A page in its own context (its own storage); its uncaught errors go to `errors`."""
    context = await browser.new_context(viewport={"width": 1100, "height": 640})
    page = await context.new_page()
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    page.set_default_timeout(UI_WAIT_MS)
    return page


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
    # Acked: the server's id replaces 0 ("sent", or already "read" if the peer has it open).
    await expect(mine).to_have_attribute("data-server-msg-id", re.compile(r"^[1-9][0-9]*$"))
    await expect(mine.locator(".state")).to_have_text(re.compile("^(sent|read)$"))


def session(page: Page, session_type: int, session_id: int) -> Any:
    return page.locator(f'#sessions li[data-session="{session_type}:{session_id}"]')


async def test_two_users_chat_single_and_group(
    embedded_system: System, browser: Browser, tmp_path: Path
) -> None:
    system = embedded_system
    gate = await system.gate()
    await system.start_consumers()
    alice = await system.user(nick="alice")
    bob = await system.user(nick="bob")
    carol = await system.user(nick="carol")
    async with ApiServer(system.runtime.users, system.runtime.routes) as api:
        errors: list[str] = []
        a, b = await new_page(browser, errors), await new_page(browser, errors)
        await login(a, api, gate, alice, system.tokens[alice])
        await login(b, api, gate, bob, system.tokens[bob])

        # -- single chat: alice -> bob twice; bob sees two unread, opens, reads, answers
        await open_conversation(a, 1, bob)
        await send(a, "hello bob")
        await send(a, "are you there?")
        await expect(session(b, 1, alice)).to_have_attribute("data-unread", "2")
        await expect(session(b, 1, alice).locator(".preview")).to_have_text(
            f"{alice}: are you there?"
        )
        await expect(b.locator("#total-unread")).to_have_text("2")

        await session(b, 1, alice).click()
        await expect(b.locator("#messages li.theirs .text")).to_have_text(
            ["hello bob", "are you there?"]
        )
        # bob's read ack reaches alice as a read notify: both her messages show "read"
        await expect(a.locator("#messages li.mine .state")).to_have_text(["read", "read"])
        await expect(session(b, 1, alice)).to_have_attribute("data-unread", "0")

        await send(b, "hi alice")
        await expect(a.locator("#messages li.theirs .text")).to_have_text(["hi alice"])
        # alice has the conversation open: she reads it as it arrives, and bob sees that
        await expect(b.locator("#messages li.mine .state")).to_have_text(["read"])
        await expect(session(a, 1, bob)).to_have_attribute("data-unread", "0")

        # -- group: alice creates it with bob and carol, both write, both see the other
        await a.fill("#group-name", "coffee")
        await a.fill("#group-members", f"{bob}, {carol}")
        await a.click("#group-form button")
        group_key = await a.locator("#chat").get_attribute("data-session", timeout=UI_WAIT_MS)
        assert group_key is not None
        assert group_key.startswith("2:")
        group = int(group_key.split(":")[1])
        await expect(a.locator("#chat-title")).to_have_text("# coffee")
        await send(a, "hello group")

        # bob: alice's message is unread in the group's session; the creation notice is
        # shown but never counts as unread (docs/protocol-extensions.md, issue 14)
        await expect(session(b, 2, group)).to_have_attribute("data-unread", "1")
        await expect(session(b, 2, group).locator(".name")).to_have_text("# coffee")
        await session(b, 2, group).click()
        await expect(b.locator("#messages li.notice")).to_contain_text("created the group")
        await expect(b.locator("#messages li.theirs .text")).to_have_text(["hello group"])
        await send(b, "hi all")
        await expect(a.locator("#messages li.theirs .text")).to_have_text(["hi all"])
        await expect(session(b, 2, group)).to_have_attribute("data-unread", "0")
        await expect(session(b, 1, alice)).to_have_attribute("data-unread", "0")

        # carol was offline: the group's messages wait in her history, in order
        carol_client = await system.login(carol)
        history = await carol_client.history(group, session_type=2)  # type: ignore[arg-type]
        texts = [m.msg_data.decode() for m in history.msg_list if m.msg_type == 1]
        assert texts == ["hello group", "hi all"]

        await a.screenshot(path=tmp_path / "web-demo-alice.png")
        await b.screenshot(path=tmp_path / "web-demo-bob.png")
        assert (tmp_path / "web-demo-bob.png").stat().st_size > 10_000
        assert errors == []


async def test_page_codec_matches_the_python_protocol(
    embedded_system: System, browser: Browser
) -> None:
    """Frames, the command table and protobuf bodies, byte for byte as the server's."""
    async with ApiServer(embedded_system.runtime.users, embedded_system.runtime.routes) as api:
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
    """vendor/ is what `make demo-vendor` makes from package-lock.json, untouched."""
    assert check_vendor() == []
