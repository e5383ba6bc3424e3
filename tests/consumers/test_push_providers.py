"""Each push provider's HTTP exchange against a real local server that checks method, path,
headers (a valid JWT signed with the test key) and body shape; and how answers map to
outcomes (invalid tokens, retries, failures)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from coffeebus.settings import PushSettings
from consumers.push_providers.apns import ApnsProvider, ProviderToken
from consumers.push_providers.base import Outcome, RetrySettings, notification_for
from consumers.push_providers.configured import PushConfigError, configured_providers
from consumers.push_providers.fcm import FcmProvider, ServiceAccount
from consumers.push_providers.webhook import WebhookPushProvider
from schemas.events import PushNotice, PushRequest
from schemas.ids import ConversationId, TraceId, UserId
from schemas.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from store.push_tokens import PushDevice, PushProvider
from tests.consumers.push_servers import Answer, H2Server, Http1Server, Seen

FAST = RetrySettings(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.005)
TEAM, KEY_ID, TOPIC = "TEAM123456", "KEY1234567", "org.coffeechat.app"
PROJECT = "coffee-project"
SECRET = "webhook-secret"

NOTICE = PushNotice(
    conversation=ConversationId("s:3:7"),
    seq=12,
    from_user_id=UserId(3),
    from_nick_name="alice",
    session_type=1,
    msg_type=1,
    created_ms=1_718_000_000_000,
    preview="hello bob",
)
NOTIFICATION = notification_for(
    PushRequest(UserId(7), NOTICE, TraceId("ab" * 16), ts_ms=1_718_000_000_500)
)


def device(provider: PushProvider, token: str = "tok-1", app_id: str = "") -> PushDevice:
    return PushDevice(
        user_id=UserId(7), provider=provider, token=token, app_id=app_id, client_type=2
    )


def test_the_notification_says_who_and_what() -> None:
    assert NOTIFICATION.title == "alice"
    assert NOTIFICATION.body == "hello bob"
    group = msgspec.structs.replace(NOTICE, session_type=2, group_id=9, preview="")
    quiet = notification_for(PushRequest(UserId(7), group, TraceId("ab" * 16), 0))
    assert (quiet.title, quiet.body, quiet.group_id) == ("alice (group)", "New message", 9)


# -- webhook -------------------------------------------------------------------------------


async def test_webhook_push_is_signed_json_of_the_documented_shape() -> None:
    async with Http1Server() as server:
        provider = WebhookPushProvider(
            url=f"{server.url}/push", secret=SECRET, retry=FAST, timeout_s=5
        )
        try:
            assert await provider.send(device(PushProvider.WEBHOOK), NOTIFICATION) is Outcome.SENT
        finally:
            await provider.aclose()
    (seen,) = server.requests
    assert (seen.method, seen.path) == ("POST", "/push")
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-coffeebus-event-type"] == "push"
    assert verify(
        SECRET,
        seen.headers[TIMESTAMP_HEADER.lower()],
        seen.headers[SIGNATURE_HEADER.lower()],
        seen.body,
    )
    assert not verify("other", seen.headers[TIMESTAMP_HEADER.lower()], "v1=00", seen.body)
    payload = json.loads(seen.body)
    assert payload["version"] == 1
    assert payload["type"] == "push"
    assert payload["device"] == {"user_id": 7, "token": "tok-1", "app_id": "", "client_type": 2}
    assert payload["notification"] == msgspec.to_builtins(NOTIFICATION)
    assert payload["notification"]["conversation"] == "s:3:7"


async def test_webhook_retries_5xx_then_succeeds_and_410_means_invalid() -> None:
    answers = [Answer(503), Answer(500), Answer(200), Answer(410), Answer(400)]

    def respond(seen: Seen) -> Answer:
        return answers.pop(0)

    async with Http1Server(respond) as server:
        provider = WebhookPushProvider(url=server.url, secret="", retry=FAST, timeout_s=5)
        try:
            assert await provider.send(device(PushProvider.WEBHOOK), NOTIFICATION) is Outcome.SENT
            assert len(server.requests) == 3
            gone = await provider.send(device(PushProvider.WEBHOOK), NOTIFICATION)
            assert gone is Outcome.INVALID_TOKEN
            refused = await provider.send(device(PushProvider.WEBHOOK), NOTIFICATION)
            assert refused is Outcome.FAILED
        finally:
            await provider.aclose()
    assert SIGNATURE_HEADER.lower() not in server.requests[0].headers  # no secret: unsigned


async def test_a_provider_that_keeps_failing_gives_up_after_its_attempts() -> None:
    async with Http1Server(lambda seen: Answer(502)) as server:
        provider = WebhookPushProvider(url=server.url, secret="", retry=FAST, timeout_s=5)
        try:
            assert await provider.send(device(PushProvider.WEBHOOK), NOTIFICATION) is (
                Outcome.FAILED
            )
        finally:
            await provider.aclose()
    assert len(server.requests) == FAST.max_attempts


# -- APNs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def p8(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    """The key as a PKCS#8 PEM (what Apple's .p8 file and a service account key hold)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def apns_checker(key: ec.EllipticCurvePrivateKey, answers: dict[str, Answer]) -> H2Server:
    """An APNs stand-in: checks every request, answers by device token."""

    def respond(seen: Seen) -> Answer:
        assert seen.method == "POST"
        assert seen.path.startswith("/3/device/")
        scheme, _, token = seen.headers["authorization"].partition(" ")
        assert scheme == "bearer"
        assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}
        claims = jwt.decode(token, key.public_key(), algorithms=["ES256"])
        assert claims["iss"] == TEAM
        assert isinstance(claims["iat"], int)
        assert seen.headers["apns-topic"] == TOPIC
        assert seen.headers["apns-push-type"] == "alert"
        assert seen.headers["apns-priority"] == "10"
        assert seen.headers["content-type"] == "application/json"
        body = json.loads(seen.body)
        assert set(body) == {"aps", "cb"}
        assert body["aps"]["alert"] == {"title": "alice", "body": "hello bob"}
        assert body["cb"]["conversation"] == "s:3:7"
        return answers.get(seen.path.removeprefix("/3/device/"), Answer(200, b""))

    return H2Server(respond)


def apns(url: str, key: ec.EllipticCurvePrivateKey, topic: str = TOPIC) -> ApnsProvider:
    token = ProviderToken(team_id=TEAM, key_id=KEY_ID, private_key_pem=p8(key))
    return ApnsProvider(url=url, token=token, topic=topic, retry=FAST, timeout_s=5)


async def test_apns_over_http2_with_an_es256_provider_token(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    answers = {
        "gone": Answer(410, b'{"reason":"Unregistered","timestamp":1718000000000}'),
        "bad": Answer(400, b'{"reason":"BadDeviceToken"}'),
        "payload": Answer(400, b'{"reason":"PayloadTooLarge"}'),
    }
    async with apns_checker(ec_key, answers) as server:
        provider = apns(server.url, ec_key)
        try:
            outcomes = [
                await provider.send(device(PushProvider.APNS, token), NOTIFICATION)
                for token in ("ok", "gone", "bad", "payload")
            ]
        finally:
            await provider.aclose()
    assert outcomes == [Outcome.SENT, Outcome.INVALID_TOKEN, Outcome.INVALID_TOKEN, Outcome.FAILED]
    assert [r.path for r in server.requests] == [
        "/3/device/ok",
        "/3/device/gone",
        "/3/device/bad",
        "/3/device/payload",
    ]
    assert server.requests[0].headers["apns-collapse-id"] == "s:3:7"


async def test_apns_renews_a_refused_provider_token(ec_key: ec.EllipticCurvePrivateKey) -> None:
    answers = [Answer(403, b'{"reason":"ExpiredProviderToken"}'), Answer(200, b"")]
    tokens: list[str] = []

    async with apns_checker(ec_key, {}) as server:
        check = server.respond

        def respond(seen: Seen) -> Answer:
            check(seen)
            tokens.append(seen.headers["authorization"])
            return answers.pop(0)

        server.respond = respond
        provider = apns(server.url, ec_key)
        try:
            first = provider._token.get()
            assert await provider.send(device(PushProvider.APNS), NOTIFICATION) is Outcome.SENT
        finally:
            await provider.aclose()
    assert len(tokens) == 2
    assert tokens[0] == f"bearer {first}"
    assert tokens[1] != tokens[0]  # made again (ECDSA signatures differ even for one second)


async def test_apns_device_app_id_overrides_the_topic(ec_key: ec.EllipticCurvePrivateKey) -> None:
    async with H2Server() as server:
        provider = apns(server.url, ec_key, topic="")
        try:
            no_topic = await provider.send(device(PushProvider.APNS), NOTIFICATION)
            own = await provider.send(device(PushProvider.APNS, app_id="com.x.app"), NOTIFICATION)
        finally:
            await provider.aclose()
    assert (no_topic, own) == (Outcome.FAILED, Outcome.SENT)
    (seen,) = server.requests
    assert seen.headers["apns-topic"] == "com.x.app"


# -- FCM -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FcmStandIn:
    """The OAuth2 token endpoint and FCM's send endpoint on one HTTP/1.1 server."""

    def __init__(self, key: rsa.RSAPrivateKey, answers: dict[str, Answer]) -> None:
        self.key = key
        self.answers = answers
        self.issued: list[str] = []
        self.server = Http1Server(self.respond)

    def respond(self, seen: Seen) -> Answer:
        assert seen.method == "POST"
        if seen.path == "/token":
            assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
            form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
            assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            claims = jwt.decode(
                form["assertion"],
                self.key.public_key(),
                algorithms=["RS256"],
                audience=f"{self.server.url}/token",
            )
            assert claims["iss"] == "pusher@coffee-project.iam.gserviceaccount.com"
            assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
            assert claims["exp"] - claims["iat"] == 3600
            self.issued.append(f"access-{len(self.issued) + 1}")
            return Answer(
                200, json.dumps({"access_token": self.issued[-1], "expires_in": 3599}).encode()
            )
        assert seen.path == f"/v1/projects/{PROJECT}/messages:send"
        assert seen.headers["authorization"] == f"Bearer {self.issued[-1]}"
        assert seen.headers["content-type"] == "application/json"
        message = json.loads(seen.body)["message"]
        assert message["notification"] == {"title": "alice", "body": "hello bob"}
        assert message["data"]["seq"].isdigit()
        assert all(isinstance(v, str) for v in message["data"].values())
        assert message["android"] == {"priority": "high", "collapse_key": "s:3:7"}
        return self.answers.get(message["token"], Answer(200, b'{"name":"projects/p/messages/1"}'))


def fcm_error(status: int, code: str, message: str) -> Answer:
    detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
    error = {"code": status, "message": message, "status": code, "details": [detail]}
    return Answer(status, json.dumps({"error": error}).encode())


@pytest.fixture
async def fcm_stand_in(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[FcmStandIn]:
    answers = {
        "unregistered": fcm_error(404, "UNREGISTERED", "Requested entity was not found."),
        "garbage": fcm_error(
            400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"
        ),
        "quota": fcm_error(429, "QUOTA_EXCEEDED", "Quota exceeded"),
    }
    stand_in = FcmStandIn(rsa_key, answers)
    async with stand_in.server:
        yield stand_in


def fcm(stand_in: FcmStandIn) -> FcmProvider:
    account = ServiceAccount(
        client_email="pusher@coffee-project.iam.gserviceaccount.com",
        private_key=p8(stand_in.key),
        token_uri="https://oauth2.example.invalid/token",  # overridden by token_url
    )
    return FcmProvider(
        url=stand_in.server.url,
        project_id=PROJECT,
        account=account,
        token_url=f"{stand_in.server.url}/token",
        retry=FAST,
        timeout_s=5,
    )


async def test_fcm_v1_with_a_service_account_grant(fcm_stand_in: FcmStandIn) -> None:
    provider = fcm(fcm_stand_in)
    try:
        outcomes = [
            await provider.send(device(PushProvider.FCM, token), NOTIFICATION)
            for token in ("ok-1", "ok-2", "unregistered", "garbage", "quota")
        ]
    finally:
        await provider.aclose()
    assert outcomes == [
        Outcome.SENT,
        Outcome.SENT,
        Outcome.INVALID_TOKEN,
        Outcome.INVALID_TOKEN,
        Outcome.FAILED,  # 429 every time: retried, then given up
    ]
    server = fcm_stand_in.server
    assert len(server.on("/token")) == 1  # one grant serves every send until it expires
    assert len(server.on("/v1/")) == 4 + FAST.max_attempts


async def test_fcm_renews_the_access_token_after_a_401(fcm_stand_in: FcmStandIn) -> None:
    fcm_stand_in.answers["expired"] = fcm_error(401, "UNAUTHENTICATED", "bad credentials")
    provider = fcm(fcm_stand_in)
    try:
        outcome = await provider.send(device(PushProvider.FCM, "expired"), NOTIFICATION)
    finally:
        await provider.aclose()
    assert outcome is Outcome.FAILED  # the stand-in refuses every token for this device
    assert len(fcm_stand_in.server.on("/token")) == FAST.max_attempts


# -- settings ------------------------------------------------------------------------------


async def test_providers_are_enabled_by_their_settings(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert configured_providers(PushSettings()) == {}
    key = tmp_path / "AuthKey.p8"
    key.write_text(p8(ec_key))
    account = tmp_path / "service-account.json"
    account.write_text(
        json.dumps({"type": "service_account", "client_email": "a@b", "private_key": p8(rsa_key)})
    )
    settings = PushSettings(
        webhook_url="http://127.0.0.1:1/push",
        apns_team_id=TEAM,
        apns_key_id=KEY_ID,
        apns_key_path=str(key),
        fcm_project_id=PROJECT,
        fcm_credentials_path=str(account),
    )
    providers = configured_providers(settings)
    try:
        assert sorted(providers) == ["apns", "fcm", "webhook"]
    finally:
        for provider in providers.values():
            await provider.aclose()
    with pytest.raises(PushConfigError, match="apns_key_path"):
        configured_providers(PushSettings(apns_team_id=TEAM))
    with pytest.raises(PushConfigError, match="cannot read"):
        configured_providers(
            PushSettings(fcm_project_id=PROJECT, fcm_credentials_path=str(tmp_path / "none"))
        )
