"""What the API serves besides the business endpoints: probes, metrics, the demo page and the
API docs — each as docs/observability.md, docs/api.md and docs/web-demo.md say."""

from __future__ import annotations

import re
import socket

from playwright.async_api import Browser, expect

import telemetry.metrics  # noqa: F401  # what a gate or consumer in the process registers
from bus.memory import MemoryBus
from bus.topology import load_topology
from coffeebus.settings import ApiSettings
from producers.app import Pipeline, create_app
from store.groups import GroupSpec
from store.ids import GateId, UserId
from store.memory.groups import MemoryGroupStore
from store.memory.messages import MemoryMessageStore
from store.memory.routes import MemoryRouteStore
from store.memory.users import MemoryUserStore
from store.users import UserImport
from tests.producers.browser import ApiServer, Offline, new_page
from tests.producers.conftest import Stores, in_process_client


async def test_metrics_are_served_on_the_api_port_without_a_key(memory_stores: Stores) -> None:
    app = create_app(ApiSettings(api_keys=("k1",)), memory_stores.users, memory_stores.routes)
    async with in_process_client(app) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert response.headers["content-type"].count("charset") == 1
    assert "# TYPE coffeebus_gate_connections gauge" in response.text
    assert "coffeebus_records_consumed_total" in response.text


async def test_probes_answer_json(memory_stores: Stores) -> None:
    app = create_app(ApiSettings(), memory_stores.users, memory_stores.routes)
    async with in_process_client(app) as client:
        health, ready = await client.get("/healthz"), await client.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert health.headers["content-type"] == "application/json"


async def test_the_demo_page_answers_head_and_names_its_charset_once(
    memory_stores: Stores,
) -> None:
    app = create_app(ApiSettings(), memory_stores.users, memory_stores.routes)
    async with in_process_client(app) as client:
        get, head = await client.get("/demo"), await client.head("/demo")
    assert get.status_code == head.status_code == 200
    assert get.headers["content-type"] == "text/html; charset=utf-8"
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == str(len(get.content))
    assert head.content == b""
    assert "Content-Security-Policy" in head.headers


async def test_the_api_docs_render_from_this_server_alone(
    memory_stores: Stores, browser: Browser
) -> None:
    """/schema is ReDoc served by CoffeeBus: no CDN, no web fonts; a machine without
    internet gets the whole page (every request to another host is refused and listed)."""
    app = create_app(ApiSettings(), memory_stores.users, memory_stores.routes)
    async with ApiServer(memory_stores.users, memory_stores.routes, app=app) as api:
        errors: list[str] = []
        offline = Offline()
        page = await new_page(browser, errors, offline=offline)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(f"{api.url}/schema")
        # ReDoc rendered the document: the title, a tag and an operation of it.
        await expect(page.locator("h1")).to_contain_text("CoffeeBus server API")
        await expect(page.locator("h2", has_text="Live gates, least loaded first")).to_be_visible()
        await page.wait_for_load_state("networkidle")
        assert offline.external == []
        assert errors == []
        assert f"{api.url}/schema/static/vendor/redoc.standalone.js" in requested
        html = (await (await page.context.request.get(f"{api.url}/schema")).body()).decode()
        head = html.split("Redoc.init(")[0]
        assert not re.findall(r"""(?:src|href)=['"](?:https?:)?//""", head)


async def test_demo_users_names_the_caller_and_the_members_of_their_groups() -> None:
    users = MemoryUserStore()
    groups = MemoryGroupStore()
    for uid, nick in ((1, "ann"), (2, "ben"), (3, "cy"), (4, "stranger")):
        await users.upsert(UserImport(user_id=UserId(uid), nick_name=nick, token=f"t{uid}"))
    await groups.create(
        GroupSpec(name="tea", owner_id=UserId(1)), [UserId(2), UserId(3)], create_key="k"
    )
    pipeline = Pipeline(
        bus=MemoryBus(), topology=load_topology(), groups=groups, messages=MemoryMessageStore()
    )
    app = create_app(ApiSettings(), users, MemoryRouteStore(), pipeline=pipeline)
    query = "/demo/users?id=3&id=4&id=1&id=2&id=3"
    async with in_process_client(app) as client:
        ok = await client.get(
            query, headers={"X-CoffeeBus-User-Id": "2", "X-CoffeeBus-Token": "t2"}
        )
        wrong = await client.get(
            query, headers={"X-CoffeeBus-User-Id": "2", "X-CoffeeBus-Token": "t1"}
        )
        anonymous = await client.get(query)
        alone = await client.get(
            "/demo/users?id=4&id=1", headers={"X-CoffeeBus-User-Id": "4", "X-CoffeeBus-Token": "t4"}
        )
    assert ok.status_code == 200
    # The caller's group companions, in the order asked; the stranger (no shared group) not.
    assert ok.json() == {
        "users": [
            {"user_id": "3", "nick_name": "cy", "avatar_url": ""},
            {"user_id": "1", "nick_name": "ann", "avatar_url": ""},
            {"user_id": "2", "nick_name": "ben", "avatar_url": ""},
        ]
    }
    assert wrong.status_code == anonymous.status_code == 401
    assert alone.json() == {"users": [{"user_id": "4", "nick_name": "stranger", "avatar_url": ""}]}


async def test_the_demo_suggests_the_gate_by_the_name_the_browser_used(
    memory_stores: Stores,
) -> None:
    """A gate bound to every interface advertises this machine's host name, which a browser
    may not resolve; the page gets the name it reached the API by, as the banner prints."""
    here = socket.gethostname()
    await memory_stores.routes.gate_heartbeat(
        GateId("g1"), tcp_addr=f"{here}:8000", ws_addr=f"ws://{here}:8001", connections=0, ttl=30
    )
    await memory_stores.routes.gate_heartbeat(
        GateId("g2"),
        tcp_addr="im.example.com:8000",
        ws_addr="wss://im.example.com:443",
        connections=5,
        ttl=30,
    )
    app = create_app(ApiSettings(), memory_stores.users, memory_stores.routes)
    async with in_process_client(app) as client:
        # httpx's in-process client names the host "testserver"; a browser: 127.0.0.1
        loopback = await client.get("http://127.0.0.1:18080/demo/gate")
    assert loopback.json() == {"ws_urls": ["ws://127.0.0.1:8001", "wss://im.example.com:443"]}
