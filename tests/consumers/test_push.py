"""The push handler with real local APNs (HTTP/2) and FCM servers: every device of a user
gets one push per message, replays push nothing twice, tokens the providers report invalid
are removed, devices of unconfigured providers are skipped."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric import ec

from bus.base import Record
from consumers.push import PushHandler
from consumers.push_providers.base import Outcome, Provider
from schemas.events import PushNotice, PushRequest, encode_record
from schemas.ids import ConversationId, TraceId, UserId
from store.memory.push_log import MemoryPushLog
from store.memory.push_tokens import MemoryPushTokenStore
from store.push_tokens import PushDevice, PushProvider
from tests.consumers.push_servers import Answer
from tests.consumers.test_push_providers import (  # the fixtures are used by name
    FcmStandIn,
    apns,
    apns_checker,
    ec_key,  # noqa: F401
    fcm,
    fcm_error,
    fcm_stand_in,  # noqa: F401
    rsa_key,  # noqa: F401
)

BOB, CAROL = UserId(7), UserId(8)


def request(user: UserId, seq: int) -> Record:
    notice = PushNotice(
        conversation=ConversationId("s:3:7"),
        seq=seq,
        from_user_id=UserId(3),
        from_nick_name="alice",
        session_type=1,
        msg_type=1,
        created_ms=1,
        preview="hello bob",
    )
    value = encode_record(PushRequest(user, notice, TraceId("ab" * 16), ts_ms=2))
    return Record("im.push", 0, seq, b"%d" % user, value, (), 0)


async def test_pushes_once_per_device_and_removes_invalid_tokens(
    ec_key: ec.EllipticCurvePrivateKey,  # noqa: F811 (the imported fixture)
    fcm_stand_in: FcmStandIn,  # noqa: F811
) -> None:
    tokens = MemoryPushTokenStore()
    for provider, token in [
        (PushProvider.APNS, "ok"),
        (PushProvider.APNS, "gone"),
        (PushProvider.FCM, "ok-fcm"),
        (PushProvider.FCM, "unregistered"),
        (PushProvider.WEBHOOK, "nobody-configured-me"),
    ]:
        await tokens.register(PushDevice(user_id=BOB, provider=provider, token=token))
    fcm_stand_in.answers["unregistered"] = fcm_error(404, "UNREGISTERED", "not found")
    gone = {"gone": Answer(410, b'{"reason":"Unregistered"}')}
    async with apns_checker(ec_key, gone) as server:
        providers: dict[str, Provider] = {
            "apns": apns(server.url, ec_key),
            "fcm": fcm(fcm_stand_in),
        }
        handler = PushHandler(tokens=tokens, push_log=MemoryPushLog(), providers=providers)
        try:
            await handler.handle([request(BOB, 1), request(CAROL, 1), request(BOB, 2)])
            await handler.handle([request(BOB, 1), request(BOB, 2)])  # replayed
        finally:
            await handler.close()

    # both of bob's requests were in one batch: each device got both, then none again
    assert sorted(r.path for r in server.requests) == [
        "/3/device/gone",
        "/3/device/gone",
        "/3/device/ok",
        "/3/device/ok",
    ]
    fcm_tokens = sorted(
        json.loads(r.body)["message"]["token"] for r in fcm_stand_in.server.on("/v1/")
    )
    assert fcm_tokens == ["ok-fcm", "ok-fcm", "unregistered", "unregistered"]
    stats = handler.stats
    assert stats.requests == 5
    assert stats.no_device == 1  # carol has none
    assert stats.duplicates == 2
    assert stats.outcomes[("webhook", Outcome.SKIPPED)] == 2
    assert stats.outcomes[("apns", Outcome.SENT)] == 2
    assert stats.outcomes[("fcm", Outcome.SENT)] == 2
    assert stats.tokens_removed == 2
    left = await tokens.devices(BOB)
    assert sorted(d.token for d in left) == ["nobody-configured-me", "ok", "ok-fcm"]
