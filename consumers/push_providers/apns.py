"""APNs: Apple Push Notification service over HTTP/2 with token-based authentication.

One request per device::

    POST <apns_url>/3/device/<device token>          (HTTP/2 only)
    authorization: bearer <provider token>
    apns-topic: <bundle id>                          (the device's app_id, else [push] apns_topic)
    apns-push-type: alert
    apns-priority: 10
    apns-collapse-id: <conversation>                 (a newer push replaces the older one)
    content-type: application/json

    {"aps": {"alert": {"title": ..., "body": ...}, "sound": "default",
             "thread-id": <conversation>, "mutable-content": 1},
     "cb": {"conversation": ..., "seq": ..., "from_user_id": ..., "session_type": ...,
            "group_id": ...}}

The provider token is a JWT signed with ES256 by the team's .p8 key: header ``{alg: ES256,
kid: <key id>}``, claims ``{iss: <team id>, iat: <now>}``. Apple accepts one for an hour
and refuses tokens renewed more often than every 20 minutes, so one is made per 50 minutes
(and at once after an ``ExpiredProviderToken`` answer). ``mutable-content`` lets the app's
notification service extension rewrite the alert (e.g. localise it).

Answers: 200 sent; 410 ``Unregistered`` and 400 ``BadDeviceToken`` / ``DeviceTokenNotForTopic``
mean the token is dead (removed); 429 and 5xx are retried; 403 ``ExpiredProviderToken`` /
``InvalidProviderToken`` renew the provider token and retry; anything else fails. Base URL
``https://api.sandbox.push.apple.com`` for development builds.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import httpx
import jwt
import msgspec

from consumers.push_providers.base import (
    Notification,
    Outcome,
    RetrySettings,
    TransientPushError,
    send_with_retries,
    transient_status,
)
from store.push_tokens import PushDevice, PushProvider

__all__ = ["ApnsProvider", "ProviderToken"]

log = logging.getLogger(__name__)

#: APNs reasons that mean the device token will never work (for this topic) again.
INVALID_TOKEN_REASONS: Final = frozenset(
    {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic", "ExpiredToken"}
)
#: reasons that mean our provider token must be renewed
PROVIDER_TOKEN_REASONS: Final = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})
#: renew the provider token this often (Apple: valid ≤ 60 min, renew ≥ every 20 min)
PROVIDER_TOKEN_TTL_S: Final = 50 * 60


class ProviderToken:
    """The ES256 provider token, made again when it is old or refused."""

    def __init__(self, *, team_id: str, key_id: str, private_key_pem: str) -> None:
        self._team_id = team_id
        self._key_id = key_id
        self._key = private_key_pem
        self._token = ""
        self._issued_s = 0.0

    def get(self) -> str:
        """A valid provider token."""
        now = time.time()
        if not self._token or now - self._issued_s >= PROVIDER_TOKEN_TTL_S:
            self._token = jwt.encode(
                {"iss": self._team_id, "iat": int(now)},
                self._key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
            self._issued_s = now
        return self._token

    def renew(self) -> None:
        """Forget the current token (APNs refused it)."""
        self._token = ""


class _Reason(msgspec.Struct):
    reason: str = ""


class ApnsProvider:
    """`consumers.push_providers.base.Provider` for APNs (module docstring)."""

    name = PushProvider.APNS.value

    def __init__(
        self,
        *,
        url: str,
        token: ProviderToken,
        topic: str,
        retry: RetrySettings,
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._topic = topic
        self._retry = retry
        # HTTP/2 only: APNs speaks nothing else (on http:// — a local test server — this is
        # HTTP/2 with prior knowledge).
        self._client = client or httpx.AsyncClient(http1=False, http2=True, timeout=timeout_s)

    async def send(self, device: PushDevice, notification: Notification) -> Outcome:
        """POST to /3/device/<token> (module docstring)."""
        topic = device.app_id or self._topic
        if not topic:
            log.warning("push apns: no apns-topic for user %d's device", device.user_id)
            return Outcome.FAILED
        body = msgspec.json.encode(_payload(notification))
        url = f"{self._url}/3/device/{device.token}"

        async def attempt() -> Outcome:
            headers = {
                "authorization": f"bearer {self._token.get()}",
                "apns-topic": topic,
                "apns-push-type": "alert",
                "apns-priority": "10",
                "apns-collapse-id": notification.conversation,
                "content-type": "application/json",
            }
            response = await self._client.post(url, content=body, headers=headers)
            if response.status_code == httpx.codes.OK:
                return Outcome.SENT
            reason = _reason(response)
            if response.status_code == httpx.codes.GONE or reason in INVALID_TOKEN_REASONS:
                return Outcome.INVALID_TOKEN
            if reason in PROVIDER_TOKEN_REASONS:
                self._token.renew()
                raise TransientPushError(f"HTTP {response.status_code} {reason}")
            if transient_status(response.status_code):
                raise TransientPushError(f"HTTP {response.status_code} {reason}")
            log.warning(
                "push apns: user %d's device refused: HTTP %d %s",
                device.user_id,
                response.status_code,
                reason,
            )
            return Outcome.FAILED

        return await send_with_retries(
            self.name, attempt, self._retry, what=f"user {device.user_id} seq {notification.seq}"
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _payload(n: Notification) -> dict[str, object]:
    return {
        "aps": {
            "alert": {"title": n.title, "body": n.body},
            "sound": "default",
            "thread-id": n.conversation,
            "mutable-content": 1,
        },
        "cb": {
            "conversation": n.conversation,
            "seq": n.seq,
            "from_user_id": n.from_user_id,
            "session_type": n.session_type,
            "group_id": n.group_id,
        },
    }


def _reason(response: httpx.Response) -> str:
    try:
        return msgspec.json.decode(response.content, type=_Reason).reason
    except msgspec.DecodeError:
        return ""
