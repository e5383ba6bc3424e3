"""FCM: Firebase Cloud Messaging, HTTP v1 API, authorised by a service account.

One request per device::

    POST <fcm_url>/v1/projects/<project id>/messages:send
    authorization: Bearer <OAuth2 access token>
    content-type: application/json

    {"message": {"token": <registration token>,
                 "notification": {"title": ..., "body": ...},
                 "data": {"conversation": ..., "seq": "12", ...},        (strings only)
                 "android": {"priority": "high", "collapse_key": <conversation>}}}

The access token comes from the service account's JWT grant (RFC 7523): a JWT signed with
RS256 by the account's private key — claims ``{iss: client_email, scope:
https://www.googleapis.com/auth/firebase.messaging, aud: <token url>, iat, exp: iat+3600}`` —
POSTed form-encoded (``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=...``)
to the token URL (``[push] fcm_token_url``, else the key file's ``token_uri``). The answer's
``access_token`` is kept until a minute before its ``expires_in``, or until a 401.

Answers: 200 sent; 404 ``UNREGISTERED``, 400 ``INVALID_ARGUMENT`` about the registration
token, and 403 ``SENDER_ID_MISMATCH`` mean the token is dead (removed); 429, 5xx and
``UNAVAILABLE`` / ``INTERNAL`` are retried; 401 renews the access token and retries; anything
else fails.
"""

from __future__ import annotations

import asyncio
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

__all__ = ["AccessToken", "FcmProvider", "ServiceAccount"]

log = logging.getLogger(__name__)

SCOPE: Final = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: FCM error codes that mean the registration token will never work again
INVALID_TOKEN_CODES: Final = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})


class ServiceAccount(msgspec.Struct, frozen=True):
    """The fields of a Google service account JSON key file that the grant needs."""

    client_email: str
    private_key: str
    token_uri: str = "https://oauth2.googleapis.com/token"
    project_id: str = ""


class _TokenAnswer(msgspec.Struct):
    access_token: str
    expires_in: int = 3600


class AccessToken:
    """The OAuth2 access token, fetched by the JWT grant and kept until it nearly expires."""

    def __init__(
        self, *, account: ServiceAccount, token_url: str, client: httpx.AsyncClient
    ) -> None:
        self._account = account
        self._token_url = token_url or account.token_uri
        self._client = client
        self._token = ""
        self._expires_s = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        """A valid access token (one grant at a time, however many sends wait for it)."""
        async with self._lock:
            if not self._token or time.time() >= self._expires_s:
                await self._fetch()
            return self._token

    def renew(self) -> None:
        """Forget the current token (FCM refused it)."""
        self._token = ""

    async def _fetch(self) -> None:
        now = int(time.time())
        assertion = jwt.encode(
            {
                "iss": self._account.client_email,
                "scope": SCOPE,
                "aud": self._token_url,
                "iat": now,
                "exp": now + 3600,
            },
            self._account.private_key,
            algorithm="RS256",
        )
        response = await self._client.post(
            self._token_url, data={"grant_type": GRANT_TYPE, "assertion": assertion}
        )
        if transient_status(response.status_code):
            raise TransientPushError(f"token endpoint: HTTP {response.status_code}")
        if not response.is_success:
            # a refused grant is a configuration error: retrying a few times costs little
            raise TransientPushError(
                f"token endpoint refused the grant: HTTP {response.status_code} "
                f"{response.text[:200]}"
            )
        answer = msgspec.json.decode(response.content, type=_TokenAnswer)
        self._token = answer.access_token
        self._expires_s = now + max(answer.expires_in - 60, 0)


class _Detail(msgspec.Struct, rename="camel"):
    error_code: str = ""


class _Error(msgspec.Struct):
    status: str = ""
    message: str = ""
    details: list[_Detail] = msgspec.field(default_factory=list)


class _ErrorBody(msgspec.Struct):
    error: _Error = msgspec.field(default_factory=_Error)


class FcmProvider:
    """`consumers.push_providers.base.Provider` for FCM HTTP v1 (module docstring)."""

    name = PushProvider.FCM.value

    def __init__(
        self,
        *,
        url: str,
        project_id: str,
        account: ServiceAccount,
        token_url: str,
        retry: RetrySettings,
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._send_url = f"{url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self._access = AccessToken(account=account, token_url=token_url, client=self._client)
        self._retry = retry

    async def send(self, device: PushDevice, notification: Notification) -> Outcome:
        """POST messages:send (module docstring)."""
        body = msgspec.json.encode({"message": _message(device.token, notification)})

        async def attempt() -> Outcome:
            headers = {
                "authorization": f"Bearer {await self._access.get()}",
                "content-type": "application/json",
            }
            response = await self._client.post(self._send_url, content=body, headers=headers)
            if response.is_success:
                return Outcome.SENT
            error = _error(response)
            codes = {d.error_code for d in error.details if d.error_code} | {error.status}
            if codes & INVALID_TOKEN_CODES or (
                "INVALID_ARGUMENT" in codes and "token" in error.message.lower()
            ):
                return Outcome.INVALID_TOKEN
            if response.status_code == httpx.codes.UNAUTHORIZED:
                self._access.renew()
                raise TransientPushError("HTTP 401: access token refused")
            if transient_status(response.status_code) or codes & {"UNAVAILABLE", "INTERNAL"}:
                raise TransientPushError(f"HTTP {response.status_code} {sorted(codes)}")
            log.warning(
                "push fcm: user %d's device refused: HTTP %d %s %s",
                device.user_id,
                response.status_code,
                sorted(codes),
                error.message[:200],
            )
            return Outcome.FAILED

        return await send_with_retries(
            self.name, attempt, self._retry, what=f"user {device.user_id} seq {notification.seq}"
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _message(token: str, n: Notification) -> dict[str, object]:
    return {
        "token": token,
        "notification": {"title": n.title, "body": n.body},
        "data": {
            "conversation": n.conversation,
            "seq": str(n.seq),
            "from_user_id": str(n.from_user_id),
            "session_type": str(n.session_type),
            "group_id": str(n.group_id),
        },
        "android": {"priority": "high", "collapse_key": n.conversation},
    }


def _error(response: httpx.Response) -> _Error:
    try:
        return msgspec.json.decode(response.content, type=_ErrorBody).error
    except msgspec.DecodeError:
        return _Error()
