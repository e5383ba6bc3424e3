"""Push, system messages, groups, admin revoke and Idempotency-Key: good and bad input.

The user and route stores are each implementation (`stores` fixture: memory, then MongoDB +
Redis); the bus is a `MemoryBus` with every topic of topology.yaml, so the tests see exactly
which records an accepted request published — and that a refused one published none.
(`tests/consumers/test_s2c_system.py` follows the records through the consumers.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bus.base import TopicPartition
from bus.memory import MemoryBus
from bus.topology import load_topology
from coffeebus.settings import ApiSettings
from coffeebus.wiring import memory_bus_for
from producers.app import Pipeline, create_app
from producers.idempotency import key_scope, request_fingerprint
from schemas.commands import Cmd
from schemas.envelope import decode_envelope
from schemas.ids import ConnId, GateId, GroupId, UserId, c2c_conversation_id
from schemas.pb.coffeebus import ext_pb2
from store.groups import GroupSpec
from store.idempotency import IdempotencyRecord
from store.memory.groups import MemoryGroupStore
from store.memory.idempotency import MemoryIdempotencyStore
from store.memory.messages import MemoryMessageStore
from store.messages import StoredMessage
from store.redis.client import connect_redis
from store.redis.idempotency import RedisIdempotencyStore
from store.redis.keys import RedisKeys
from store.routes import Route
from store.users import UserImport
from tests.producers.conftest import Client, Stores, in_process_client
from tests.producers.test_users_api import assert_problem

ALICE, BOB, CAROL = UserId(101), UserId(102), UserId(103)


class Env:
    """The app under test and what it publishes to."""

    def __init__(self, stores: Stores) -> None:
        self.topology = load_topology()
        self.bus: MemoryBus = memory_bus_for(self.topology)
        self.groups = MemoryGroupStore()
        self.messages = MemoryMessageStore()
        self.idempotency = MemoryIdempotencyStore()
        self.stores = stores
        self.app = create_app(
            ApiSettings(),
            stores.users,
            stores.routes,
            pipeline=Pipeline(
                bus=self.bus,
                topology=self.topology,
                groups=self.groups,
                messages=self.messages,
                max_msg_data_bytes=1000,
                # no group consumer runs here: a create answers 202 without waiting
                group_create_wait_s=0.0,
            ),
            idempotency=self.idempotency,
        )

    def published(self, topic: str) -> int:
        """How many records `topic` holds."""
        count = self.topology.topic(topic).partitions
        return sum(self.bus.end_offset(TopicPartition(topic, p)) for p in range(count))


@pytest.fixture
async def env(stores: Stores) -> Env:
    for uid in (ALICE, BOB, CAROL):
        await stores.users.upsert(UserImport(user_id=uid, nick_name=f"u{uid}"))
    return Env(stores)


@pytest.fixture
async def api(env: Env) -> AsyncIterator[Client]:
    async with in_process_client(env.app) as client:
        yield client


# --- POST /v1/push ---------------------------------------------------------------------------


async def test_push_counts_online_devices_and_publishes_one_record_per_user(
    env: Env, api: Client
) -> None:
    for client_type, conn in ((1, 7), (2, 8)):
        route = Route(
            gate_id=GateId("g1"), conn_id=ConnId(conn), client_type=client_type, login_ms=1
        )
        await env.stores.routes.register(ALICE, route, ttl=60)
    response = await api.post(
        "/v1/push", json={"to_user_ids": [ALICE, BOB, ALICE], "msg_type": 9, "msg_data": "hi"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["recipients"], body["online_users"], body["devices_addressed"]) == (2, 1, 2)
    assert body["stored"] is False
    assert len(body["push_id"]) == 32
    assert env.published("im.s2c") == 2
    assert env.published("im.up.msg") == 0


def _records(env: Env, topic: str) -> list[Any]:
    out = []
    for p in range(env.topology.topic(topic).partitions):
        out.extend(env.bus._topic(topic).logs[p])
    return out


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        ({}, 400, "invalid-request"),
        ({"to_user_ids": [], "msg_type": 1, "msg_data": "x"}, 400, "invalid-request"),
        ({"to_user_ids": [0], "msg_type": 1, "msg_data": "x"}, 400, "invalid-request"),
        ({"to_user_ids": [2**63], "msg_type": 1, "msg_data": "x"}, 400, "number-out-of-range"),
        ({"to_user_ids": [ALICE], "msg_type": -1, "msg_data": "x"}, 400, "invalid-request"),
        ({"to_user_ids": [ALICE], "msg_type": 1, "msg_data": 5}, 400, "invalid-request"),
        ({"to_user_ids": [ALICE], "msg_type": 1, "msg_data": "x" * 1001}, 400, None),
        ({"to_user_ids": [ALICE], "msg_type": 1, "msg_data": "x", "nope": 1}, 400, None),
        ({"to_user_ids": [ALICE], "msg_type": 1, "msg_data": "x", "push_id": ""}, 400, None),
        ({"to_user_ids": [ALICE], "msg_type": 1, "msg_data": "x", "store": True}, 400, None),
        (
            {"to_user_ids": [ALICE], "msg_type": 99, "msg_data": "x", "store": True,
             "from_user_id": BOB},
            400,
            None,
        ),
        (
            {"to_user_ids": [ALICE], "msg_type": 1, "msg_data": "x", "store": True,
             "from_user_id": ALICE},
            400,
            None,
        ),
        ({"to_user_ids": [ALICE, 999], "msg_type": 1, "msg_data": "x"}, 404, "unknown-user"),
    ],
)  # fmt: skip
async def test_push_refuses_bad_input_and_publishes_nothing(
    env: Env, api: Client, body: dict[str, Any], status: int, slug: str | None
) -> None:
    assert_problem(await api.post("/v1/push", json=body), status, slug)
    assert env.published("im.s2c") == env.published("im.up.msg") == 0


async def test_stored_push_is_a_system_message_per_recipient(env: Env, api: Client) -> None:
    response = await api.post(
        "/v1/push",
        json={
            "to_user_ids": [BOB, CAROL],
            "msg_type": 1,
            "msg_data": "kept",
            "store": True,
            "from_user_id": ALICE,
            "push_id": "p9",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] is True
    assert env.published("im.s2c") == 0
    envelopes = [decode_envelope(r.value) for r in _records(env, "im.up.msg")]
    assert len(envelopes) == 2
    assert all(e.origin is None and e.cmd == Cmd.MSG_DATA for e in envelopes)


# --- POST /v1/messages -------------------------------------------------------------------------


async def test_system_message_is_published_keyed_by_its_conversation(env: Env, api: Client) -> None:
    response = await api.post(
        "/v1/messages",
        json={"from_user_id": ALICE, "session_type": "single", "to_session_id": BOB,
              "msg_data": "hi", "client_msg_id": "m-1"},
    )  # fmt: skip
    assert response.status_code == 202, response.text
    assert response.json() == {"client_msg_id": "m-1", "conversation": f"s:{ALICE}:{BOB}"}
    (record,) = _records(env, "im.up.msg")
    assert record.key == c2c_conversation_id(ALICE, BOB).encode()
    assert decode_envelope(record.value).origin is None


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        ({"from_user_id": ALICE, "session_type": "single", "to_session_id": ALICE,
          "msg_data": "x"}, 400, None),
        ({"from_user_id": ALICE, "session_type": "chat", "to_session_id": BOB,
          "msg_data": "x"}, 400, None),
        ({"from_user_id": ALICE, "session_type": "single", "to_session_id": BOB,
          "msg_data": "x", "msg_type": 42}, 400, None),
        ({"from_user_id": ALICE, "session_type": "single", "to_session_id": BOB,
          "msg_data": "x", "client_msg_id": "a b"}, 400, None),
        ({"from_user_id": ALICE, "session_type": "single", "to_session_id": 999,
          "msg_data": "x"}, 404, "unknown-user"),
        ({"from_user_id": 999, "session_type": "group", "to_session_id": 1,
          "msg_data": "x"}, 404, "unknown-user"),
        ({"from_user_id": ALICE, "session_type": "group", "to_session_id": 999,
          "msg_data": "x"}, 404, "unknown-group"),
    ],
)  # fmt: skip
async def test_system_message_refuses_bad_input(
    env: Env, api: Client, body: dict[str, Any], status: int, slug: str | None
) -> None:
    assert_problem(await api.post("/v1/messages", json=body), status, slug)
    assert env.published("im.up.msg") == 0


# --- groups ----------------------------------------------------------------------------------


async def test_group_requests_are_checked_then_published(env: Env, api: Client) -> None:
    created = await api.post(
        "/v1/groups", json={"owner_id": ALICE, "name": "g", "member_ids": [BOB, ALICE, BOB]}
    )
    # No group consumer runs here: the API answers 202 with the id it allocated.
    assert created.status_code == 202, created.text
    body = created.json()
    assert (body["name"], body["owner_id"], body["member_count"], body["created"]) == (
        "g",
        ALICE,
        2,
        False,
    )
    (record,) = _records(env, "im.up.group")
    envelope = decode_envelope(record.value)
    assert (envelope.cmd, envelope.origin, envelope.trace_id) == (
        Cmd.API_GROUP_CREATE_REQ,
        None,
        body["request_id"],
    )
    req = ext_pb2.ApiGroupCreateReq.FromString(envelope.body)
    assert (req.group_id, req.user_id, req.group_name, list(req.member_id_list)) == (
        body["group_id"],
        ALICE,
        "g",
        [BOB],
    )
    assert record.key == b"%d" % body["group_id"]  # keyed by the group, like its later changes
    assert await env.groups.get(GroupId(body["group_id"])) is None  # the consumer creates it
    assert_problem(
        await api.post("/v1/groups", json={"owner_id": ALICE, "name": "", "member_ids": []}), 400
    )
    assert_problem(
        await api.post("/v1/groups", json={"owner_id": ALICE, "name": "g", "member_ids": [999]}),
        404,
        "unknown-user",
    )
    assert_problem(
        await api.post("/v1/groups", json={"owner_id": ALICE, "name": "g",
                                           "member_ids": list(range(1, 300))}),
        409,
        "group-full",
    )  # fmt: skip
    group = (
        await env.groups.create(GroupSpec(name="g", owner_id=ALICE), [BOB], create_key="k")
    ).group
    gid = group.group_id
    assert_problem(await api.get("/v1/groups/abc"), 400)
    assert_problem(await api.get("/v1/groups/77"), 404, "unknown-group")
    assert_problem(await api.delete("/v1/groups/77"), 404, "unknown-group")
    assert_problem(await api.post(f"/v1/groups/{gid}/members", json={"user_ids": []}), 400)
    assert_problem(await api.post(f"/v1/groups/{gid}/members", json={"user_ids": [999]}), 404)
    assert_problem(await api.delete(f"/v1/groups/{gid}/members"), 400)
    assert_problem(await api.delete(f"/v1/groups/{gid}/members", params={"user_id": "x"}), 400)
    assert_problem(
        await api.delete(f"/v1/groups/{gid}/members", params={"user_id": str(ALICE)}), 400
    )
    assert_problem(await api.get("/v1/groups", params={"user_id": "0"}), 400)
    assert env.published("im.up.group") == 1
    ok = [
        await api.post(f"/v1/groups/{gid}/members", json={"user_ids": [CAROL]}),
        await api.delete(f"/v1/groups/{gid}/members", params={"user_id": str(BOB)}),
        await api.delete(f"/v1/groups/{gid}", params={"operator_user_id": str(BOB)}),
    ]
    assert [r.status_code for r in ok] == [202, 202, 202]
    assert env.published("im.up.group") == 4
    info = (await api.get(f"/v1/groups/{gid}")).json()
    assert info["member_ids"] == [ALICE, BOB]  # the API does not write: the consumer does
    listed = (await api.get("/v1/groups", params={"user_id": str(BOB)})).json()
    assert [g["group_id"] for g in listed["groups"]] == [gid]
    assert await env.groups.get(GroupId(gid)) == group


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        ({}, 400, "invalid-request"),
        ({"operator_user_id": 101}, 400, "invalid-request"),
        ({"name": None}, 400, "invalid-request"),
        ({"name": ""}, 400, "invalid-request"),
        ({"name": "x" * 129}, 400, "invalid-request"),
        ({"name": 5}, 400, "invalid-request"),
        ({"announcement": "x" * 4097}, 400, "invalid-request"),
        ({"mute_model": 2}, 400, "invalid-request"),
        ({"mute_model": "all"}, 400, "invalid-request"),
        ({"join_model": 3}, 400, "invalid-request"),
        ({"owner_id": 102}, 400, "invalid-request"),
        ({"name": "n", "operator_user_id": 0}, 400, "invalid-request"),
        ([], 400, "invalid-request"),
    ],
)
async def test_group_patch_refuses_bad_bodies(
    env: Env, api: Client, body: Any, status: int, slug: str
) -> None:
    group = (await env.groups.create(GroupSpec(name="g", owner_id=ALICE), [], create_key="k")).group
    assert_problem(await api.patch(f"/v1/groups/{group.group_id}", json=body), status, slug)
    assert env.published("im.up.group") == 0


async def test_group_patch_of_an_unknown_or_disbanded_group_is_404(env: Env, api: Client) -> None:
    assert_problem(await api.patch("/v1/groups/77", json={"name": "n"}), 404, "unknown-group")
    assert_problem(await api.patch("/v1/groups/x", json={"name": "n"}), 400)
    group = (await env.groups.create(GroupSpec(name="g", owner_id=ALICE), [], create_key="k")).group
    await env.groups.disband(group.group_id)
    assert_problem(
        await api.patch(f"/v1/groups/{group.group_id}", json={"name": "n"}), 404, "unknown-group"
    )
    assert env.published("im.up.group") == 0


async def test_group_patch_publishes_only_the_attributes_given(env: Env, api: Client) -> None:
    group = (await env.groups.create(GroupSpec(name="g", owner_id=ALICE), [], create_key="k")).group
    patched = await api.patch(
        f"/v1/groups/{group.group_id}",
        json={"announcement": "", "mute_model": 1, "operator_user_id": BOB},
    )
    assert patched.status_code == 202, patched.text
    (record,) = _records(env, "im.up.group")
    envelope = decode_envelope(record.value)
    assert (envelope.cmd, envelope.trace_id) == (Cmd.GROUP_UPDATE_REQ, patched.json()["request_id"])
    assert record.key == b"%d" % group.group_id
    req = ext_pb2.GroupUpdateReq.FromString(envelope.body)
    assert (req.user_id, req.group_id) == (BOB, group.group_id)
    # an empty announcement is a value (clear the notice), not "unset"
    assert [f.name for f, _ in req.ListFields()] == [
        "user_id",
        "group_id",
        "announcement",
        "mute_model",
    ]
    assert (req.announcement, int(req.mute_model)) == ("", 1)
    owner_named = await api.patch(f"/v1/groups/{group.group_id}", json={"name": "n"})
    assert owner_named.status_code == 202
    latest = decode_envelope(_records(env, "im.up.group")[-1].value)
    assert ext_pb2.GroupUpdateReq.FromString(latest.body).user_id == ALICE  # default: the owner


async def test_idempotency_key_on_patch_replays_and_publishes_once(env: Env, api: Client) -> None:
    group = (await env.groups.create(GroupSpec(name="g", owner_id=ALICE), [], create_key="k")).group
    url = f"/v1/groups/{group.group_id}"
    headers = {"Idempotency-Key": "patch-1"}
    first = await api.patch(url, json={"name": "n"}, headers=headers)
    again = await api.patch(url, json={"name": "n"}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert env.published("im.up.group") == 1
    reused = await api.patch(url, json={"name": "other"}, headers=headers)
    assert_problem(reused, 422, "idempotency-key-reused")


# --- admin revoke ----------------------------------------------------------------------------


async def test_admin_revoke_checks_the_message_exists(env: Env, api: Client) -> None:
    conversation = c2c_conversation_id(ALICE, BOB)
    await env.messages.insert_many(
        [
            StoredMessage(
                conversation=conversation, seq=5, client_msg_id="c5", from_user_id=ALICE,
                to_session_id=BOB, session_type=1, msg_type=1, msg_data=b"x", created_ms=1,
            )
        ]
    )  # fmt: skip
    assert_problem(await api.post(f"/v1/messages/{conversation}/6/revoke"), 404, "unknown-message")
    assert_problem(await api.post(f"/v1/messages/s:{BOB}:{ALICE}/5/revoke"), 400)
    assert_problem(await api.post("/v1/messages/x:1/5/revoke"), 400)
    assert_problem(await api.post(f"/v1/messages/{conversation}/0/revoke"), 400)
    assert env.published("im.up.msg") == 0
    ok = await api.post(f"/v1/messages/{conversation}/5/revoke")
    assert ok.status_code == 202, ok.text
    (record,) = _records(env, "im.up.msg")
    envelope = decode_envelope(record.value)
    assert envelope.origin is None
    assert envelope.cmd == Cmd.REVOKE_REQ
    req = ext_pb2.RevokeReq.FromString(envelope.body)
    assert (req.user_id, req.session_id, req.server_msg_id) == (ALICE, BOB, 5)


# --- Idempotency-Key -------------------------------------------------------------------------


async def test_idempotency_key_replays_refuses_reuse_and_releases_failures(
    env: Env, api: Client
) -> None:
    body = {"to_user_ids": [ALICE], "msg_type": 1, "msg_data": "x"}
    key = {"Idempotency-Key": "order-1"}
    first = await api.post("/v1/push", json=body, headers=key)
    replay = await api.post("/v1/push", json=body, headers=key)
    assert replay.status_code == 200
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert env.published("im.s2c") == 1
    assert_problem(
        await api.post("/v1/push", json={**body, "msg_type": 2}, headers=key),
        422,
        "idempotency-key-reused",
    )
    # Another caller (API key) has its own key space.
    other = await api.post("/v1/push", json=body, headers={**key, "Authorization": "Bearer b"})
    assert "idempotent-replayed" not in other.headers
    assert env.published("im.s2c") == 2
    # A failed request changed nothing and does not hold its key.
    bad = {"to_user_ids": [999], "msg_type": 1, "msg_data": "x"}
    assert_problem(await api.post("/v1/push", json=bad, headers={"Idempotency-Key": "k2"}), 404)
    await env.stores.users.upsert(UserImport(user_id=UserId(999)))
    retried = await api.post("/v1/push", json=bad, headers={"Idempotency-Key": "k2"})
    assert retried.status_code == 200
    assert_problem(await api.post("/v1/push", json=body, headers={"Idempotency-Key": " "}), 400)
    assert_problem(
        await api.post("/v1/push", json=body, headers={"Idempotency-Key": "x" * 256}), 400
    )


async def test_a_key_still_in_flight_is_a_conflict(env: Env, api: Client) -> None:
    body = b'{"to_user_ids": [101], "msg_type": 1, "msg_data": "x"}'
    # What the middleware reserved for the first request, still running elsewhere:
    fingerprint = request_fingerprint("POST", "/v1/push", b"", body)
    scope = key_scope(b"", b"busy")
    assert await env.idempotency.reserve(scope, fingerprint, ttl_s=60) is None
    response = await api.post(
        "/v1/push",
        content=body,
        headers={"Idempotency-Key": "busy", "Content-Type": "application/json"},
    )
    assert_problem(response, 409, "idempotency-key-in-use")
    assert response.headers["retry-after"] == "1"
    assert env.published("im.s2c") == 0


async def test_memory_store_records_expire() -> None:
    store = MemoryIdempotencyStore()
    assert await store.reserve("s", "f", ttl_s=0.0) is None
    assert await store.reserve("s", "f", ttl_s=60) is None  # the first one lapsed
    held = await store.reserve("s", "g", ttl_s=60)
    assert held == IdempotencyRecord("f")
    assert held.pending


@pytest.mark.redis
async def test_redis_store_reserves_once_completes_and_releases(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    keys = RedisKeys(namespace=f"cbtest:{uuid.uuid4().hex[:12]}:")
    store = RedisIdempotencyStore(redis, keys=keys)
    try:
        # Concurrent duplicates: exactly one reserves, the others see its pending marker.
        results = await asyncio.gather(*(store.reserve("s", "f", ttl_s=60) for _ in range(8)))
        assert results.count(None) == 1
        assert all(r == IdempotencyRecord("f") for r in results if r is not None)
        done = IdempotencyRecord("f", status=200, media_type="application/json", body=b"{}")
        await store.complete("s", done, ttl_s=60)
        assert await store.reserve("s", "g", ttl_s=60) == done
        assert 0 < await redis.pttl(keys.idempotency("s")) <= 60_000
        await store.release("s")
        assert await store.reserve("s", "g", ttl_s=60) is None
    finally:
        leftovers = [k async for k in redis.scan_iter(match=keys.pattern())]
        if leftovers:
            await redis.delete(*leftovers)
        await redis.aclose()
