"""API-key authentication of business endpoints, and the loopback-only rule without keys.

Business servers send ``Authorization: Bearer <key>``; the key must equal one of
``settings.api.api_keys``. Keys are compared as SHA-256 digests with
`hmac.compare_digest`, against every configured key, so neither the position of the first
differing byte nor the length of a key leaks through timing.

With no key configured the API is unauthenticated, which is only acceptable when nothing but
the machine itself can reach it: `check_bind_address` refuses any other listen address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any, Final

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

__all__ = ["ApiKeyGuard", "UnsafeBindError", "check_bind_address", "is_loopback_host"]

logger = logging.getLogger(__name__)

_BEARER: Final = "bearer"
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="coffeebus"'}


class UnsafeBindError(ValueError):
    """The API would listen beyond loopback without any API key."""


def is_loopback_host(host: str) -> bool:
    """Whether `host` (an address or ``localhost``) only accepts connections from this
    machine. Wildcards (``0.0.0.0``, ``::``, empty) and other names are not loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_address(host: str, api_keys: Iterable[str]) -> None:
    """Refuse to serve an unauthenticated API on a non-loopback address; log the mode.

    Raises `UnsafeBindError` when no key is configured and `host` is not loopback.
    """
    if any(api_keys):
        logger.info("HTTP API requires an API key (Authorization: Bearer) on %s", host)
        return
    if not is_loopback_host(host):
        raise UnsafeBindError(
            f"the HTTP API has no API key configured and would listen on {host!r}: "
            "set api.api_keys (COFFEEBUS_API__API_KEYS) or listen on 127.0.0.1"
        )
    logger.warning("HTTP API is UNAUTHENTICATED (no api.api_keys): listening on %s only", host)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeyGuard:
    """A Litestar guard accepting a request whose bearer token is one of the keys.

    With no keys it accepts everything (the loopback-only mode, see `check_bind_address`).
    """

    __slots__ = ("_digests",)

    def __init__(self, api_keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in api_keys if key)

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a key."""
        return bool(self._digests)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries a configured key."""
        if not self._digests:
            return True
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != _BEARER or not key.strip():
            return False
        given = _digest(key.strip())
        # No early exit: every key is compared, so timing does not tell which one matched.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(digest, given)
        return matched

    def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        """Guard entry point: raise 401 unless the request carries a configured key."""
        if not self.accepts(connection.headers.get("authorization")):
            raise NotAuthorizedException(
                "missing or invalid API key: send Authorization: Bearer <key>",
                headers=_CHALLENGE,
            )

    def as_guard(self) -> Guard:
        """This object typed as a Litestar `Guard`."""
        return self
