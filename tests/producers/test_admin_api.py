"""Session administration over the HTTP API (`producers.admin`): kick, ban, unban, delete,
token rotation — what each changes in the stores, which `KickUser` records reach which gate
topics, which business events it emits, and that each is idempotent.

The user and route stores are each implementation (`stores`: memory, then MongoDB + Redis);
the bus is a `MemoryBus`, so the tests read exactly what was published. The gates' side (a
`KickUser` closing connections) is tests/gateway/test_logins.py; the whole path across two
gate processes is tests/gateway/test_admin_processes.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bus.memory import MemoryBus
from bus.topology import load_topology
from coffeebus.settings import ApiSettings
from coffeebus.wiring import memory_bus_for
from producers.app import Pipeline, create_app
from schemas.bizevents import (
    BizEvent,
    UserBanned,
    UserDeleted,
    UserKicked,
    UserTokenRotated,
    UserUnbanned,
    decode_event,
)
from schemas.codes import KickReason
from schemas.commands import Cmd
from schemas.envelope import KickUser, decode_envelope, decode_gate_record, token_digest
from schemas.ids import ConnId, GateId, GroupId, UserId
from schemas.pb.coffeechat import group_pb2
from store.groups import GroupSpec
from store.memory.groups import MemoryGroupStore
from store.memory.messages import MemoryMessageStore
from store.memory.push_tokens import MemoryPushTokenStore
from store.push_tokens import PushDevice, PushProvider
from store.routes import Route
from store.users import TokenStatus, UserImport
from tests.producers.conftest import Client, Stores, in_process_client
from tests.producers.test_users_api import assert_problem

ALICE, BOB, CAROL = UserId(201), UserId(202), UserId(203)
GATES = ("gate-a", "gate-b")


class Env:
    def __init__(self, stores: Stores) -> None:
        self.topology = load_topology()
        self.bus: MemoryBus = memory_bus_for(self.topology)
        self.groups = MemoryGroupStore()
        self.push_tokens = MemoryPushTokenStore()
        self.stores = stores
        self.app = create_app(
            ApiSettings(),
            stores.users,
            stores.routes,
            pipeline=Pipeline(
                bus=self.bus,
                topology=self.topology,
                groups=self.groups,
                messages=MemoryMessageStore(),
                group_create_wait_s=0.0,
            ),
            push_tokens=self.push_tokens,
        )

    def records(self, topic: str) -> list[bytes]:
        """Every record published to `topic`, partition by partition."""
        return [r.value for log in self.bus._topic(topic).logs for r in log]

    def kicks(self, gate: str) -> list[KickUser]:
        found = []
        for value in self.records(self.topology.gate_topic(gate).name):
            record = decode_gate_record(value)
            assert isinstance(record, KickUser)
            found.append(record)
        return found

    def events(self) -> list[BizEvent]:
        return [decode_event(v) for v in self.records("biz.events.user")]


@pytest.fixture
async def env(stores: Stores) -> Env:
    for uid in (ALICE, BOB, CAROL):
        await stores.users.upsert(UserImport(user_id=uid, nick_name=f"u{uid}", token=f"t{uid}"))
    env = Env(stores)
    for gate in GATES:  # two live gates, with their topics (a gate creates its own)
        env.bus.create_topic(env.topology.gate_topic(gate).name, 4)
        await stores.routes.gate_heartbeat(
            GateId(gate), tcp_addr="h:1", ws_addr="ws://h:2", connections=1, ttl=60
        )
    for client_type, gate in ((1, "gate-a"), (3, "gate-b")):
        route = Route(gate_id=GateId(gate), conn_id=ConnId(9), client_type=client_type, login_ms=1)
        await stores.routes.register(ALICE, route, ttl=60)
    return env


@pytest.fixture
async def api(env: Env) -> AsyncIterator[Client]:
    async with in_process_client(env.app) as client:
        yield client


def _only(events: list[BizEvent], kind: type[Any]) -> Any:
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, events
    return found[0]


async def test_kick_tells_every_live_gate(env: Env, api: Client) -> None:
    response = await api.post(f"/v1/users/{ALICE}/kick", json={"reason": "support ticket 7"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "user_id": ALICE,
        "client_type": None,
        "devices": 2,
        "gates_notified": 2,
    }
    for gate in GATES:
        [kick] = env.kicks(gate)
        assert (kick.user_id, kick.client_types, kick.keep_token) == (ALICE, (), b"")
        assert (KickReason(kick.reason), kick.text) == (KickReason.ADMIN, "support ticket 7")
    event = _only(env.events(), UserKicked)
    assert (event.user_id, event.client_type, event.gates_notified) == (ALICE, None, 2)
    assert event.id == f"user.kicked:{ALICE}:{event.trace_id}"
    # No body at all: every connection, no reason.
    response = await api.post(f"/v1/users/{ALICE}/kick")
    assert response.status_code == 200, response.text
    assert env.kicks("gate-a")[-1].client_types == ()
    # One client type; the user may log in again (nothing changed in the store).
    response = await api.post(f"/v1/users/{ALICE}/kick", json={"client_type": 3})
    assert response.json()["devices"] == 1
    assert env.kicks("gate-b")[-1].client_types == (3,)
    assert (await env.stores.users.check_token(ALICE, f"t{ALICE}")).ok


async def test_ban_and_unban(env: Env, api: Client) -> None:
    response = await api.post(f"/v1/users/{ALICE}/ban", json={"reason": "spam"})
    assert response.status_code == 200, response.text
    state = response.json()
    assert (state["banned"], state["ban_reason"], state["gates_notified"]) == (True, "spam", 2)
    for gate in GATES:
        [kick] = env.kicks(gate)
        assert (KickReason(kick.reason), kick.text) == (KickReason.BANNED, "spam")
    check = await env.stores.users.check_token(ALICE, f"t{ALICE}")
    assert check.user is not None
    assert check.user.banned  # the token is kept; the gate refuses the login
    # Idempotent: the same ban, the same event id (consumers dedupe), kicks again.
    again = await api.post(f"/v1/users/{ALICE}/ban", json={"reason": "other"})
    assert again.json()["banned_ms"] == state["banned_ms"]
    assert again.json()["ban_reason"] == "spam"
    banned = [e for e in env.events() if isinstance(e, UserBanned)]
    assert [e.id for e in banned] == [f"user.banned:{ALICE}:{state['banned_ms']}"] * 2
    response = await api.delete(f"/v1/users/{ALICE}/ban")
    assert response.status_code == 200
    assert (response.json()["banned"], response.json()["banned_ms"]) == (False, state["banned_ms"])
    response = await api.delete(f"/v1/users/{ALICE}/ban")  # again: no change
    assert response.json()["banned"] is False
    unbanned = [e for e in env.events() if isinstance(e, UserUnbanned)]
    assert {e.id for e in unbanned} == {f"user.unbanned:{ALICE}:{state['banned_ms']}"}
    check = await env.stores.users.check_token(ALICE, f"t{ALICE}")
    assert check.user is not None
    assert not check.user.banned


async def test_rotating_a_token_closes_what_the_old_one_opened(env: Env, api: Client) -> None:
    response = await api.post(f"/v1/users/{ALICE}/token")
    assert response.status_code == 200, response.text
    body = response.json()
    new = body["token"]
    assert body["gates_notified"] == 2
    for gate in GATES:
        [kick] = env.kicks(gate)
        assert KickReason(kick.reason) is KickReason.TOKEN_REVOKED
        assert kick.keep_token == token_digest(new)  # spares the new token's logins
    old = await env.stores.users.check_token(ALICE, f"t{ALICE}")
    assert old.status is TokenStatus.BAD_TOKEN
    event = _only(env.events(), UserTokenRotated)
    assert new not in event.id  # a digest, never the token


async def test_delete_user(env: Env, api: Client) -> None:
    users, groups = env.stores.users, env.groups
    member = await groups.create(GroupSpec(name="member", owner_id=BOB), [ALICE], create_key="m")
    owned = await groups.create(GroupSpec(name="owned", owner_id=ALICE), [BOB], create_key="o")
    await env.push_tokens.register(
        PushDevice(
            user_id=ALICE, provider=PushProvider.FCM, token="fcm-1", app_id="a", client_type=1
        )
    )
    response = await api.delete(f"/v1/users/{ALICE}")
    assert response.status_code == 200, response.text
    body = response.json()
    member_id, owned_id = member.group.group_id, owned.group.group_id
    assert (body["groups_left"], body["groups_owned"]) == ([member_id], [owned_id])
    assert (body["push_tokens_removed"], body["gates_notified"]) == (1, 2)
    for gate in GATES:
        [kick] = env.kicks(gate)
        assert KickReason(kick.reason) is KickReason.ACCOUNT_DELETED
    # The group consumer is asked to take Alice out of the group she is a member of.
    [record] = env.records("im.up.group")
    envelope = decode_envelope(record)
    assert (envelope.cmd, envelope.origin) == (Cmd.GROUP_EXIT_REQ, None)
    exit_req = group_pb2.GroupExitReq.FromString(envelope.body)
    assert (exit_req.user_id, exit_req.group_id) == (ALICE, member_id)
    assert await env.push_tokens.devices(ALICE) == []
    assert (await users.check_token(ALICE, f"t{ALICE}")).status is TokenStatus.UNKNOWN_USER
    event = _only(env.events(), UserDeleted)
    assert (event.id, event.groups_left, event.groups_owned) == (
        f"user.deleted:{ALICE}",
        (member_id,),
        (owned_id,),
    )
    # The id is retired: reads are 410, an import 409; a repeat answers the same.
    assert_problem(await api.get(f"/v1/users/{ALICE}"), 410, "user-deleted")
    assert_problem(await api.get(f"/v1/users/{ALICE}/devices"), 410, "user-deleted")
    assert_problem(await api.post(f"/v1/users/{ALICE}/token"), 410, "user-deleted")
    assert_problem(await api.post(f"/v1/users/{ALICE}/ban", json={}), 410, "user-deleted")
    assert_problem(await api.post(f"/v1/users/{ALICE}/kick", json={}), 410, "user-deleted")
    assert_problem(
        await api.put(f"/v1/users/{ALICE}", json={"nick_name": "back"}), 409, "user-deleted"
    )
    repeat = await api.delete(f"/v1/users/{ALICE}")
    assert repeat.status_code == 200
    assert {k: v for k, v in repeat.json().items() if k != "push_tokens_removed"} == {
        k: v for k, v in body.items() if k != "push_tokens_removed"
    }
    assert [e.id for e in env.events() if isinstance(e, UserDeleted)] == [event.id] * 2
    assert await groups.members(GroupId(owned_id)) == sorted([ALICE, BOB])  # kept


async def test_unknown_users_are_404(env: Env, api: Client) -> None:
    nobody = 9999
    for method, path in (
        ("POST", f"/v1/users/{nobody}/kick"),
        ("POST", f"/v1/users/{nobody}/ban"),
        ("DELETE", f"/v1/users/{nobody}/ban"),
        ("DELETE", f"/v1/users/{nobody}"),
        ("POST", f"/v1/users/{nobody}/token"),
    ):
        body: dict[str, Any] | None = (
            {} if method == "POST" and not path.endswith("token") else None
        )
        response = await api.request(method, path, json=body)
        assert_problem(response, 404, "unknown-user")
    assert env.events() == []
    for gate in GATES:
        assert env.kicks(gate) == []


@pytest.mark.parametrize(
    "body",
    [{"client_type": -1}, {"client_type": 2**32}, {"reason": "x" * 257}, {"nope": 1}],
)
async def test_bad_kicks_are_400(env: Env, api: Client, body: dict[str, Any]) -> None:
    assert_problem(await api.post(f"/v1/users/{ALICE}/kick", json=body), 400)
    assert env.kicks("gate-a") == []
