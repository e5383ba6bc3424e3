"""Authentication, health, readiness, the OpenAPI document and serving of the API app."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import httpx
import pytest
from pymongo.errors import OperationFailure

from coffeebus.settings import ApiSettings
from producers.app import create_app, serve_api
from producers.auth import ApiKeyGuard, UnsafeBindError, check_bind_address, is_loopback_host
from tests.producers.conftest import Stores, in_process_client
from tests.producers.test_users_api import assert_problem

KEYS = ("key-one", "key-two")


async def test_business_endpoints_need_a_configured_key(memory_stores: Stores) -> None:
    app = create_app(ApiSettings(api_keys=KEYS), memory_stores.users, memory_stores.routes)
    async with in_process_client(app) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer "},
            {"Authorization": "Basic key-one"},
            {"Authorization": "key-one"},
        ):
            for method, path in (
                ("GET", "/v1/gates"),
                ("PUT", "/v1/users/1"),
                ("POST", "/user/register"),
                ("GET", "/v1/users/1"),
            ):
                response = await client.request(method, path, headers=headers, json={})
                assert_problem(response, 401, "unauthorized")
                assert response.headers["www-authenticate"].startswith("Bearer")
        for key in KEYS:
            ok = await client.get("/v1/gates", headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        lower = await client.get("/v1/gates", headers={"Authorization": "bearer key-two"})
        assert lower.status_code == 200
        # Probes stay open: orchestrators do not hold API keys.
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200


def test_guard_compares_against_every_key() -> None:
    guard = ApiKeyGuard(KEYS)
    assert guard.enabled
    assert guard.accepts("Bearer key-two")
    assert not guard.accepts("Bearer key")
    assert not guard.accepts(None)
    open_guard = ApiKeyGuard(())
    assert not open_guard.enabled
    assert open_guard.accepts(None)


def test_guard_strips_surrounding_whitespace() -> None:
    assert ApiKeyGuard(KEYS).accepts("Bearer   key-one")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_no_key_refuses_non_loopback_and_warns_on_loopback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(UnsafeBindError, match="api_keys"):
        check_bind_address("0.0.0.0", ())
    with caplog.at_level(logging.WARNING, logger="producers.auth"):
        check_bind_address("127.0.0.1", ())
    assert "UNAUTHENTICATED" in caplog.text
    check_bind_address("0.0.0.0", KEYS)  # a key makes any address acceptable


async def test_serve_api_refuses_before_binding(memory_stores: Stores) -> None:
    settings = ApiSettings(host="0.0.0.0", port=_free_port())
    app = create_app(settings, memory_stores.users, memory_stores.routes)
    with pytest.raises(UnsafeBindError):
        await serve_api(app, settings)


async def test_readyz_reports_the_failing_check(memory_stores: Stores) -> None:
    async def ok() -> None:
        return None

    async def down() -> None:
        raise ConnectionError("refused")

    async def hangs() -> None:
        await asyncio.Event().wait()

    app = create_app(
        ApiSettings(),
        memory_stores.users,
        memory_stores.routes,
        readiness_checks=(("mongodb", ok), ("redis", down), ("slow", hangs)),
    )
    async with in_process_client(app) as client:
        body = assert_problem(await client.get("/readyz"), 503, "not-ready")
        assert "redis" in body["detail"]
        assert "slow" in body["detail"]
        assert "mongodb" not in body["detail"]
        assert (await client.get("/healthz")).status_code == 200


async def test_openapi_document_describes_the_bodies(memory_stores: Stores) -> None:
    app = create_app(ApiSettings(api_keys=KEYS), memory_stores.users, memory_stores.routes)
    async with in_process_client(app) as client:
        response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    paths = doc["paths"]
    assert {
        "/user/register",
        "/v1/users/{user_id}",
        "/v1/users/{user_id}/token",
        "/v1/users/{user_id}/devices",
        "/v1/gates",
        "/healthz",
        "/readyz",
    } <= set(paths)
    schemas = doc["components"]["schemas"]
    import_body = schemas["UserImportBody"]
    assert set(import_body["properties"]) == {
        "nick_name",
        "nick_name_spell",
        "phone",
        "avatar_url",
        "attach_info",
        "token",
        "user_name",
        "password",
    }
    assert "UserView" in schemas
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert paths["/v1/gates"]["get"]["security"] == [{"bearer": []}]


async def test_unexpected_errors_are_500_problems_without_internals(
    memory_stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenRoutes:
        async def live_gates(self) -> list[object]:
            raise RuntimeError("secret internals")

    app = create_app(ApiSettings(), memory_stores.users, BrokenRoutes())  # type: ignore[arg-type]
    async with in_process_client(app) as client:
        with caplog.at_level(logging.ERROR, logger="producers.problems"):
            response = await client.get("/v1/gates")
    body = assert_problem(response, 500, "internal-error")
    assert "secret" not in response.text
    assert body["detail"] == "internal server error"
    assert "secret internals" in caplog.text


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        # What FerretDB v1 on SQLite answers a write that waited out its busy timeout.
        (OperationFailure("database is locked (5) (SQLITE_BUSY)", code=1), 503, "unavailable"),
        (OperationFailure("not primary", code=10107), 503, "unavailable"),
        (OperationFailure("unknown operator: $bad", code=2), 500, "internal-error"),
    ],
)
async def test_a_store_error_is_503_when_a_retry_may_succeed_else_500(
    memory_stores: Stores, error: OperationFailure, status: int, slug: str
) -> None:
    class FailingRoutes:
        async def live_gates(self) -> list[object]:
            raise error

    app = create_app(ApiSettings(), memory_stores.users, FailingRoutes())  # type: ignore[arg-type]
    async with in_process_client(app) as client:
        response = await client.get("/v1/gates")
    assert_problem(response, status, slug)
    assert (response.headers.get("retry-after") == "1") is (status == 503)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_serve_api_answers_over_http(memory_stores: Stores) -> None:
    settings = ApiSettings(host="127.0.0.1", port=_free_port())
    app = create_app(settings, memory_stores.users, memory_stores.routes)
    server = asyncio.create_task(serve_api(app, settings))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}") as http:
            deadline = time.monotonic() + 10
            while True:
                assert not server.done(), server
                try:
                    response = await http.get("/healthz")
                    break
                except httpx.ConnectError:
                    if time.monotonic() > deadline:
                        pytest.fail("the API did not start listening within 10 s")
                    await asyncio.sleep(0.02)
            assert response.json() == {"status": "ok"}
            registered = await http.post("/user/register", json={"user_id": 77})
            assert registered.json()["error_code"] == 0
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
