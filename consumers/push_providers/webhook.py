"""Webhook push: POST the notification as JSON to the business's own push service.

For vendors CoffeeBus does not speak (Huawei, Xiaomi, OPPO, vivo, an in-house gateway), the
business registers devices with provider ``webhook`` and runs a service at ``[push]
webhook_url`` that receives::

    POST <webhook_url>
    Content-Type: application/json
    X-CoffeeBus-Event-Type: push
    X-CoffeeBus-Timestamp: 1718000000
    X-CoffeeBus-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>   (if a secret)

    {"version": 1, "type": "push",
     "device": {"user_id": 7, "token": "...", "app_id": "...", "client_type": 1},
     "notification": {"user_id": 7, "conversation": "s:3:7", "seq": 12, "from_user_id": 3,
                      "from_nick_name": "alice", "session_type": 1, "group_id": 0,
                      "msg_type": 1, "created_ms": 1718000000000, "preview": "",
                      "title": "alice", "body": "New message", "trace_id": "..."}}

signed like business webhooks (`schemas.webhooks`: the receiver checks it with
`schemas.webhooks.verify`). Answers: 2xx sent; **410 Gone** means "this device token is dead,
forget it" (the token is removed); 5xx, 429 and network errors are retried; any other answer
is a failure.
"""

from __future__ import annotations

import time
from typing import Final

import httpx
import msgspec

from consumers.push_providers.base import (
    Notification,
    Outcome,
    RetrySettings,
    TransientPushError,
    send_with_retries,
    transient_status,
)
from schemas.webhooks import EVENT_TYPE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_header
from store.push_tokens import PushDevice, PushProvider

__all__ = ["WebhookPayload", "WebhookPushProvider"]

PAYLOAD_VERSION: Final = 1


class WebhookDevice(msgspec.Struct, frozen=True):
    """The device a webhook push is for."""

    user_id: int
    token: str
    app_id: str
    client_type: int


class WebhookPayload(msgspec.Struct, frozen=True):
    """The JSON body of a webhook push."""

    device: WebhookDevice
    notification: Notification
    version: int = PAYLOAD_VERSION
    type: str = "push"


class WebhookPushProvider:
    """`consumers.push_providers.base.Provider` POSTing to the business's push service."""

    name = PushProvider.WEBHOOK.value

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        retry: RetrySettings,
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url
        self._secret = secret
        self._retry = retry
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def send(self, device: PushDevice, notification: Notification) -> Outcome:
        """POST the signed payload (module docstring)."""
        body = msgspec.json.encode(
            WebhookPayload(
                device=WebhookDevice(
                    user_id=device.user_id,
                    token=device.token,
                    app_id=device.app_id,
                    client_type=device.client_type,
                ),
                notification=notification,
            )
        )

        async def attempt() -> Outcome:
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                EVENT_TYPE_HEADER: "push",
                TIMESTAMP_HEADER: str(timestamp),
            }
            if self._secret:
                headers[SIGNATURE_HEADER] = signature_header(self._secret, timestamp, body)
            response = await self._client.post(self._url, content=body, headers=headers)
            if response.is_success:
                return Outcome.SENT
            if transient_status(response.status_code):
                raise TransientPushError(f"HTTP {response.status_code}")
            if response.status_code == httpx.codes.GONE:
                return Outcome.INVALID_TOKEN
            return Outcome.FAILED

        return await send_with_retries(
            self.name, attempt, self._retry, what=f"user {device.user_id} seq {notification.seq}"
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
