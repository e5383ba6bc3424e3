"""Device push-token endpoints, on the memory stores and on MongoDB (+ Redis users)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from coffeebus.settings import ApiSettings
from producers.app import create_app
from store.ids import UserId
from store.memory.push_tokens import MemoryPushTokenStore
from store.mongo.client import connect_mongo, ensure_indexes
from store.mongo.push_tokens import MongoPushTokenStore
from store.push_tokens import PushTokenStore
from store.users import UserImport
from tests.producers.conftest import Client, Stores, in_process_client
from tests.producers.test_users_api import assert_problem

AMY, BEN = UserId(301), UserId(302)


@pytest.fixture
async def tokens(stores: Stores, request: pytest.FixtureRequest) -> AsyncIterator[PushTokenStore]:
    if stores.kind == "memory":
        yield MemoryPushTokenStore()
        return
    mongo = connect_mongo(request.getfixturevalue("mongo_url"))
    db = mongo[f"cbtest_pt_{id(stores)}"]
    try:
        await ensure_indexes(db)
        yield MongoPushTokenStore(db)
    finally:
        await mongo.drop_database(db.name)
        await mongo.close()


@pytest.fixture
async def api(stores: Stores, tokens: PushTokenStore) -> AsyncIterator[Client]:
    for uid in (AMY, BEN):
        await stores.users.upsert(UserImport(user_id=uid))
    app = create_app(ApiSettings(), stores.users, stores.routes, push_tokens=tokens)
    async with in_process_client(app) as client:
        yield client


async def test_register_list_move_and_remove(api: Client, tokens: PushTokenStore) -> None:
    body = {"provider": "apns", "token": "ab12", "app_id": "com.x", "client_type": 2}
    registered = await api.post(f"/v1/users/{AMY}/push-tokens", json=body)
    assert registered.status_code == 200, registered.text
    assert registered.json()["registered_ms"] > 0
    listed = (await api.get(f"/v1/users/{AMY}/push-tokens")).json()
    assert [(d["provider"], d["token"]) for d in listed["devices"]] == [("apns", "ab12")]
    # The same device logs in as Ben: the token moves.
    await api.post(f"/v1/users/{BEN}/push-tokens", json=body)
    assert (await api.get(f"/v1/users/{AMY}/push-tokens")).json()["devices"] == []
    assert [d.user_id for d in await tokens.devices(BEN)] == [BEN]
    params = {"provider": "apns", "token": "ab12"}
    assert_problem(
        await api.delete(f"/v1/users/{AMY}/push-tokens", params=params), 404, "unknown-push-token"
    )
    assert (await api.delete(f"/v1/users/{BEN}/push-tokens", params=params)).status_code == 204
    assert await tokens.devices(BEN) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"provider": "sms", "token": "t"},
        {"provider": "fcm", "token": ""},
        {"provider": "fcm", "token": "t" * 4097},
        {"provider": "fcm", "token": "t", "client_type": -1},
        {"provider": "fcm", "token": "t", "extra": 1},
    ],
)
async def test_bad_registrations_are_400(api: Client, body: dict[str, object]) -> None:
    assert_problem(await api.post(f"/v1/users/{AMY}/push-tokens", json=body), 400)


async def test_unknown_user_and_bad_ids(api: Client) -> None:
    body = {"provider": "fcm", "token": "t"}
    assert_problem(await api.post("/v1/users/999/push-tokens", json=body), 404, "unknown-user")
    assert_problem(await api.get("/v1/users/0/push-tokens"), 400)
    assert_problem(
        await api.delete(f"/v1/users/{AMY}/push-tokens", params={"provider": "x", "token": "t"}),
        400,
    )
    assert_problem(await api.delete(f"/v1/users/{AMY}/push-tokens"), 400)
