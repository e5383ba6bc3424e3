"""Schemathesis against the served OpenAPI document: no 5xx, every response conforms; and
our own byte-level generator: bodies that are not UTF-8, not JSON or plain binary, and
valid bodies with bytes mutated, to every operation — never a 5xx.

The app runs in-process (ASGI) on the in-memory stores and an embedded `MemoryBus` with
every topic of topology.yaml, so every endpoint — the messaging ones included — is
exercised; a few users and a group exist so that generated ids sometimes hit. Examples per
operation are bounded to keep the run well under a minute. tests/security/test_api_bodies.py
walks every route with a fixed list of hostile bodies, on the real stores too.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from bus.topology import load_topology
from coffeebus.settings import ApiSettings
from coffeebus.wiring import memory_bus_for
from producers.app import Pipeline, create_app
from schemas.ids import UserId
from store.groups import GroupSpec
from store.memory.groups import MemoryGroupStore
from store.memory.messages import MemoryMessageStore
from store.memory.push_tokens import MemoryPushTokenStore
from store.memory.rooms import MemoryRoomStore
from store.memory.routes import MemoryRouteStore
from store.memory.users import MemoryUserStore
from store.users import UserImport


def _app() -> Litestar:
    users = MemoryUserStore()
    groups = MemoryGroupStore()

    async def seed() -> None:
        for uid in (1, 2, 3):
            await users.upsert(UserImport(user_id=UserId(uid), nick_name=f"u{uid}"))
        await groups.create(GroupSpec(name="g", owner_id=UserId(1)), [UserId(2)], create_key="k")

    asyncio.run(seed())
    topology = load_topology()
    return create_app(
        ApiSettings(),
        users,
        MemoryRouteStore(),
        pipeline=Pipeline(
            bus=memory_bus_for(topology),
            topology=topology,
            groups=groups,
            messages=MemoryMessageStore(),
            # no group consumer runs here: a create answers 202 at once instead of waiting
            group_create_wait_s=0.0,
            rooms=MemoryRoomStore(),
        ),
        push_tokens=MemoryPushTokenStore(),
    )


APP = _app()
schema = schemathesis.openapi.from_asgi("/schema/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_conforms(case: schemathesis.Case[Any]) -> None:
    # Not the status-code checks: cross-field rules (a stored push needs from_user_id) and
    # unknown ids make schema-valid requests 4xx by design, and those problems are not
    # listed per operation in the document (docs/api.md lists them).
    case.call_and_validate(
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance]
    )


_OPERATIONS: list[tuple[str, str, bytes]] = []


def _operations() -> list[tuple[str, str, bytes]]:
    """(method, path, a JSON body its schema accepts, or b"") of every operation."""
    if not _OPERATIONS:
        from tests.security.test_api_bodies import example  # noqa: PLC0415

        with TestClient(APP) as client:
            document = client.get("/schema/openapi.json").json()
        for template, methods in document["paths"].items():
            path = re.sub(r"\{[^}]+\}", "1", template.replace("{conversation}", "s:1:2"))
            for method, operation in methods.items():
                content = operation.get("requestBody", {}).get("content", {})
                body = b""
                if "application/json" in content:
                    value = example(content["application/json"]["schema"], document)
                    body = json.dumps(value).encode()
                _OPERATIONS.append((method.upper(), path, body))
    return _OPERATIONS


@st.composite
def _mutated(draw: st.DrawFn, body: bytes) -> bytes:
    """`body` with a few bytes replaced, inserted or removed (invalid UTF-8 included)."""
    data = bytearray(body or b"{}")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        chunk = draw(
            st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x00", b"\\u0000", b'"'])
            | st.binary(min_size=1, max_size=8)
        )
        if draw(st.booleans()):
            data[at:at] = chunk
        else:
            data[at : at + len(chunk)] = chunk
    return bytes(data)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_binary_and_mutated_bodies_are_never_a_server_error(data: st.DataObject) -> None:
    method, path, valid = data.draw(st.sampled_from(_operations()), label="operation")
    body = data.draw(st.binary(max_size=2048) | _mutated(valid), label="body")
    content_type = data.draw(
        st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]),
        label="content type",
    )
    with TestClient(APP) as client:
        response = client.request(
            method, path, content=body, headers={"content-type": content_type}
        )
    assert response.status_code < 500, (method, path, body[:200], response.text[:300])
