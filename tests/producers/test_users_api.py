"""The user endpoints, on the in-memory stores and on MongoDB + Redis (`stores` fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from store.ids import MAX_USER_ID, ConnId, GateId, UserId
from store.routes import Route
from store.users import TokenStatus
from tests.producers.conftest import Client, Stores

PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is a problem+json of this status; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:coffeebus:problem:")
    assert body["title"]
    assert body["detail"]
    if slug is not None:
        assert body["type"] == f"urn:coffeebus:problem:{slug}"
    return body


# --- POST /user/register (the seed's endpoint) -------------------------------------------


async def test_register_generates_a_token_that_logs_in(api: Client, stores: Stores) -> None:
    response = await api.post("/user/register", json={"user_id": 1008, "user_nick_name": "Amy"})
    assert response.status_code == 200
    body = response.json()
    assert body["error_code"] == 0
    assert body["error_msg"] == "success"
    assert body["user_id"] == 1008
    token = body["user_token"]
    assert len(token) >= 40
    check = await stores.users.check_token(UserId(1008), token)
    assert check.ok
    assert check.user is not None
    assert check.user.nick_name == "Amy"


async def test_register_keeps_a_given_token(api: Client, stores: Stores) -> None:
    response = await api.post(
        "/user/register",
        json={"user_id": 1009, "user_nick_name": "Bo", "user_token": "12345"},
    )
    assert response.json() == {
        "error_code": 0,
        "error_msg": "success",
        "user_id": 1009,
        "user_token": "12345",
    }
    assert (await stores.users.check_token(UserId(1009), "12345")).ok
    assert (await stores.users.check_token(UserId(1009), "54321")).status is TokenStatus.BAD_TOKEN


async def test_register_twice_is_user_already_exist(api: Client) -> None:
    first = await api.post("/user/register", json={"user_id": 7, "user_nick_name": "a"})
    assert first.status_code == 200
    again = await api.post("/user/register", json={"user_id": 7, "user_nick_name": "b"})
    assert again.status_code == 409
    assert again.json() == {"error_code": 9000, "error_msg": "user already exist"}


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        b'"x"',
        b"{}",
        b'{"user_id": "1008"}',
        b'{"user_id": 0}',
        b'{"user_id": -1}',
        b'{"user_id": 1.5}',
        b'{"user_id": 9223372036854775808}',
        b'{"user_id": 18446744073709551616}',
        b'{"user_id": 5, "user_nick_name": 3}',
        b'{"user_id": 5, "user_token": "bad\\ntoken"}',
    ],
)
async def test_register_bad_input_is_400_in_the_seed_envelope(
    memory_api: Client, content: bytes
) -> None:
    response = await memory_api.post(
        "/user/register", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == 9001
    assert body["error_msg"]
    assert "user_token" not in body


async def test_register_oversize_body_is_413_in_the_seed_envelope(memory_api: Client) -> None:
    content = b'{"user_id": 5, "user_nick_name": "' + b"x" * 70_000 + b'"}'
    response = await memory_api.post("/user/register", content=content)
    assert response.status_code == 413
    assert response.json()["error_code"] == 9001


# --- PUT / GET /v1/users/{user_id} ------------------------------------------------------


async def test_import_then_update_keeps_unchanged_fields(api: Client) -> None:
    created = await api.put(
        "/v1/users/2001",
        json={"nick_name": "Cy", "avatar_url": "https://a/1.png", "phone": "123"},
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["user_id"] == 2001
    assert (body["nick_name"], body["avatar_url"], body["phone"]) == (
        "Cy",
        "https://a/1.png",
        "123",
    )
    assert body["has_password"] is False
    assert body["user_name"] is None
    token = body["token"]
    assert token

    updated = await api.put("/v1/users/2001", json={"attach_info": '{"vip": true}'})
    assert updated.status_code == 200
    after = updated.json()
    assert after["nick_name"] == "Cy"
    assert after["attach_info"] == '{"vip": true}'
    assert after["token"] == token  # an update without a token keeps it
    assert after["created_ms"] == body["created_ms"]

    shown = await api.get("/v1/users/2001")
    assert shown.status_code == 200
    view = shown.json()
    assert view["token"] is None  # GET never shows the token
    assert view["attach_info"] == '{"vip": true}'


async def test_import_with_token_and_password_logs_in_both_ways(
    api: Client, stores: Stores
) -> None:
    response = await api.put(
        "/v1/users/2002",
        json={"nick_name": "Di", "token": "tok-2002", "user_name": "di", "password": "pw"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["has_password"] is True
    assert (await stores.users.check_token(UserId(2002), "tok-2002")).ok
    user = await stores.users.check_password("di", "pw")
    assert user is not None
    assert user.user_id == 2002
    assert await stores.users.check_password("di", "wrong") is None


async def test_taken_user_name_is_409(api: Client) -> None:
    assert (await api.put("/v1/users/2003", json={"user_name": "eve"})).status_code == 200
    taken = await api.put("/v1/users/2004", json={"user_name": "eve"})
    assert_problem(taken, 409, "user-name-taken")


async def test_password_without_a_user_name_is_400(memory_api: Client) -> None:
    response = await memory_api.put("/v1/users/2005", json={"password": "pw"})
    assert_problem(response, 400, "invalid-request")
    # Once the user has a name, a new password alone is fine.
    assert (await memory_api.put("/v1/users/2005", json={"user_name": "fay"})).status_code == 200
    assert (await memory_api.put("/v1/users/2005", json={"password": "pw"})).status_code == 200


async def test_unknown_user_is_404(api: Client) -> None:
    assert_problem(await api.get("/v1/users/4242"), 404, "unknown-user")
    assert_problem(await api.post("/v1/users/4242/token"), 404, "unknown-user")
    assert_problem(await api.get("/v1/users/4242/devices"), 404, "unknown-user")


@pytest.mark.parametrize(
    "raw_id", ["0", "-1", "abc", "1e3", "1.0", "%20", str(MAX_USER_ID + 1), str(2**64), "9" * 40]
)
async def test_out_of_range_or_malformed_ids_are_400(memory_api: Client, raw_id: str) -> None:
    for response in (
        await memory_api.get(f"/v1/users/{raw_id}"),
        await memory_api.put(f"/v1/users/{raw_id}", json={}),
        await memory_api.post(f"/v1/users/{raw_id}/token"),
        await memory_api.get(f"/v1/users/{raw_id}/devices"),
    ):
        body = assert_problem(response, 400, "invalid-request")
        assert "user id" in body["detail"]


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (b"{", None),
        (b"[1, 2]", None),
        (b'{"nick_name": 5}', "nick_name"),
        (b'{"nick_name": "x", "surprise": 1}', None),
        (b'{"token": ""}', "token"),
        (b'{"user_name": ""}', "user_name"),
        (b'{"user_name": "has space"}', None),
        (b'{"nick_name": "' + b"n" * 5000 + b'"}', "nick_name"),
        (b'{"password": ""}', "password"),
    ],
)
async def test_bad_import_bodies_are_400_problems(
    memory_api: Client, content: bytes, key: str | None
) -> None:
    response = await memory_api.put(
        "/v1/users/3001", content=content, headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 400)
    if key is not None:
        assert any(error["key"] == key for error in body["errors"])


async def test_oversize_import_body_is_413(memory_api: Client) -> None:
    content = b'{"nick_name": "' + b"x" * 70_000 + b'"}'
    assert_problem(await memory_api.put("/v1/users/3002", content=content), 413, "body-too-large")


async def test_missing_body_is_400(memory_api: Client) -> None:
    assert_problem(await memory_api.put("/v1/users/3003"), 400)


# --- tokens -------------------------------------------------------------------------------


async def test_rotate_token_kills_the_old_one(api: Client, stores: Stores) -> None:
    old = (await api.put("/v1/users/4001", json={"token": "old-token"})).json()["token"]
    response = await api.post("/v1/users/4001/token")
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == 4001
    new = body["token"]
    assert new != old
    assert (await stores.users.check_token(UserId(4001), new)).ok
    assert (await stores.users.check_token(UserId(4001), old)).status is TokenStatus.BAD_TOKEN


# --- devices and gates --------------------------------------------------------------------


async def test_devices_list_the_users_routes(api: Client, stores: Stores) -> None:
    await api.put("/v1/users/5001", json={"nick_name": "Gus"})
    offline = (await api.get("/v1/users/5001/devices")).json()
    assert offline == {"user_id": 5001, "online": False, "devices": []}

    ios = Route(gate_id=GateId("g1"), conn_id=ConnId(11), client_type=2, login_ms=1_000)
    web = Route(gate_id=GateId("g2"), conn_id=ConnId(7), client_type=3, login_ms=2_000)
    await stores.routes.register(UserId(5001), ios, ttl=60)
    await stores.routes.register(UserId(5001), web, ttl=60)
    online = (await api.get("/v1/users/5001/devices")).json()
    assert online["online"] is True
    assert online["devices"] == [
        {
            "client_type": 2,
            "client_type_name": "IOS",
            "gate_id": "g1",
            "conn_id": 11,
            "login_ms": 1_000,
        },
        {
            "client_type": 3,
            "client_type_name": "WEB",
            "gate_id": "g2",
            "conn_id": 7,
            "login_ms": 2_000,
        },
    ]


async def test_gates_are_listed_least_loaded_first(api: Client, stores: Stores) -> None:
    assert (await api.get("/v1/gates")).json() == {"gates": []}
    await stores.routes.gate_heartbeat(
        GateId("busy"),
        tcp_addr="10.0.0.1:8000",
        ws_addr="ws://10.0.0.1:8001",
        connections=50,
        ttl=30,
    )
    await stores.routes.gate_heartbeat(
        GateId("idle"),
        tcp_addr="10.0.0.2:8000",
        ws_addr="ws://10.0.0.2:8001",
        connections=3,
        ttl=30,
    )
    gates = (await api.get("/v1/gates")).json()["gates"]
    assert [gate["gate_id"] for gate in gates] == ["idle", "busy"]
    assert gates[0] == {
        "gate_id": "idle",
        "tcp_addr": "10.0.0.2:8000",
        "ws_addr": "ws://10.0.0.2:8001",
        "connections": 3,
    }
