"""The HTTP server API under hostile requests: no key, a wrong key, oversized and invalid
bodies — on every route of the served OpenAPI document (not a hand-kept list)."""

from __future__ import annotations

import re

import httpx
from litestar import Litestar

from bus.topology import load_topology
from coffeebus.settings import ApiSettings
from coffeebus.wiring import memory_bus_for
from producers.app import Pipeline, create_app
from store.memory.groups import MemoryGroupStore
from store.memory.messages import MemoryMessageStore
from store.memory.push_tokens import MemoryPushTokenStore
from store.memory.routes import MemoryRouteStore
from store.memory.users import MemoryUserStore
from tests.producers.conftest import in_process_client
from tests.producers.test_users_api import assert_problem

KEY = "the-only-key"
MAX_BODY = 4096


def _app() -> Litestar:
    users = MemoryUserStore()
    groups = MemoryGroupStore()
    topology = load_topology()
    return create_app(
        ApiSettings(api_keys=(KEY,)),
        users,
        MemoryRouteStore(),
        pipeline=Pipeline(
            bus=memory_bus_for(topology),
            topology=topology,
            groups=groups,
            messages=MemoryMessageStore(),
        ),
        push_tokens=MemoryPushTokenStore(),
        max_body_bytes=MAX_BODY,
    )


Operation = tuple[str, str, bool]  # method, path with parameters filled in, has a JSON body
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}
AUTH = {"Authorization": f"Bearer {KEY}"}


async def _operations(client: httpx.AsyncClient) -> tuple[list[Operation], set[tuple[str, str]]]:
    """Every operation of the served document, and those it declares public."""
    document = (await client.get("/schema/openapi.json")).json()
    operations: list[Operation] = []
    public: set[tuple[str, str]] = set()
    for template, methods in document["paths"].items():
        path = re.sub(r"\{conversation\}", "s:1:2", template)
        path = re.sub(r"\{[^}]+\}", "1", path)
        for method, operation in methods.items():
            if not operation.get("security"):
                public.add((method.upper(), template))
                continue
            body = "application/json" in operation.get("requestBody", {}).get("content", {})
            operations.append((method.upper(), path, body))
    return operations, public


async def test_every_business_route_refuses_a_missing_or_wrong_key() -> None:
    async with in_process_client(_app()) as client:
        operations, public = await _operations(client)
        assert public == PUBLIC  # a new route without the guard fails here
        assert len(operations) >= 15
        for method, path, _ in operations:
            for headers in (
                {},
                {"Authorization": "Bearer not-the-key"},
                {"Authorization": f"Bearer {KEY}x"},
                {"Authorization": f"Basic {KEY}"},
                {"Authorization": KEY},
            ):
                response = await client.request(method, path, headers=headers, json={})
                assert_problem(response, 401, "unauthorized")
                assert response.headers["www-authenticate"].startswith("Bearer")


async def test_oversized_and_invalid_bodies_are_4xx_problems() -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    bad_bodies: list[tuple[bytes, str]] = [
        (b"{not json", "application/json"),
        (b"[]", "application/json"),
        (b'{"user_id": "x", "members": {"a": 1}}', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b'{"a": 1}', "text/plain"),
        (b"null", "application/json"),
    ]
    async with in_process_client(_app()) as client:
        operations, _ = await _operations(client)
        with_body = [(m, p) for m, p, body in operations if body]
        assert len(with_body) >= 6
        for method, path in with_body:
            big = b'{"x": "' + b"a" * MAX_BODY + b'"}'
            for data in (big, nested):
                response = await client.request(
                    method, path, content=data, headers={**AUTH, "content-type": "application/json"}
                )
                assert_problem(response, 413, "body-too-large")
            for data, content_type in bad_bodies:
                response = await client.request(
                    method, path, content=data, headers={**AUTH, "content-type": content_type}
                )
                assert 400 <= response.status_code < 500, (method, path, data, response.text)
                assert_problem(response, response.status_code)
