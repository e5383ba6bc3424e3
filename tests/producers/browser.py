"""Chromium for the browser tests of the API's pages (the web demo, the API docs).

Debian's chromium, launched by path with the flags docs/web-demo.md lists
(`services/services.sh browser` installs it; nothing downloads a browser). Every page gets a
context of its own in which any request for another host is refused and recorded
(`Offline.external`): the pages must work on a machine that reaches nothing outside, and a
test run never sends anything off the machine.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from litestar import Litestar
from playwright.async_api import Browser, Page, Route, async_playwright, expect

from coffeebus.settings import ApiSettings
from producers.app import create_app
from store.routes import RouteStore
from store.users import UserStore
from tests.waiting import wait_for

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


async def launch_browser() -> AsyncIterator[Browser]:
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

    def __init__(
        self, users: UserStore, routes: RouteStore, *, app: Litestar | None = None
    ) -> None:
        self._app = app or create_app(ApiSettings(), users, routes)
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


class Offline:
    """Requests a page made for other hosts than the test's server: refused, and listed."""

    def __init__(self) -> None:
        self.external: list[str] = []

    async def route(self, route: Route) -> None:
        url = route.request.url
        host = urlsplit(url).hostname
        if url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            await route.continue_()
        else:
            self.external.append(url)
            await route.abort("blockedbyclient")


async def new_page(
    browser: Browser,
    errors: list[str],
    *,
    width: int = 1100,
    height: int = 640,
    offline: Offline | None = None,
    **context_options: Any,
) -> Page:
    """A page in its own context (its own storage); its uncaught errors go to `errors`, and
    requests to other hosts are refused (and listed in `offline`, when given)."""
    context = await browser.new_context(
        viewport={"width": width, "height": height}, **context_options
    )
    guard = offline or Offline()
    await context.route("**/*", guard.route)
    page = await context.new_page()
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    page.set_default_timeout(UI_WAIT_MS)
    return page
