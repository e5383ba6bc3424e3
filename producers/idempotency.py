"""``Idempotency-Key`` on every POST and PATCH: the first request with a key runs, a repeat
replays.

An ASGI middleware around every route (Litestar runs it inside routing, outside the
handler's own exception handling, so it sees every response the handler produced, errors
included). For a POST or PATCH carrying ``Idempotency-Key`` (1-255 visible ASCII characters):

1. the body is read (up to the app's body limit; a larger one passes through to its 413)
   and fingerprinted: SHA-256 over method, path, query and body;
2. the key is scoped to the caller — SHA-256 over the ``Authorization`` header and the key
   — so two business servers never see each other's responses;
3. ``IdempotencyStore.reserve`` takes the scope with a pending marker (Redis ``SET NX``,
   `pending_ttl_s`). If it was taken already:
   - by a request with another fingerprint → **422** ``idempotency-key-reused``;
   - by one still running → **409** ``idempotency-key-in-use`` with ``Retry-After``;
   - by a completed one → its stored response, replayed byte for byte with
     ``Idempotent-Replayed: true``; the handler does not run, nothing is published;
4. otherwise the request runs. A **2xx** response is stored for `ttl_s` (24 h); any other
   response releases the key: an error changed nothing, so a retry with the same key runs
   again (and may succeed once, say, the user exists).

A pending marker outlives a process that died mid-request only for `pending_ttl_s`; a
retry after that runs the request again (the pipeline's own dedupe — client_msg_id,
push_id — covers that window).
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any, Final, cast

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from producers.problems import PROBLEM_MEDIA_TYPE, make_problem
from store.idempotency import IdempotencyRecord, IdempotencyStore

__all__ = ["IDEMPOTENCY_HEADER", "IdempotencyMiddleware", "key_scope", "request_fingerprint"]

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER: Final = "idempotency-key"
#: the methods whose requests change state and so honour the header (DELETE is idempotent
#: by itself)
_METHODS: Final = frozenset({"POST", "PATCH"})
REPLAYED_HEADER: Final = b"idempotent-replayed"
_KEY_RE: Final = re.compile(rb"[\x21-\x7e]{1,255}")
#: Default lifetime of a completed key (seconds).
DEFAULT_TTL_S: Final = 24 * 3600.0
#: Default lifetime of a pending marker: longer than any request takes.
DEFAULT_PENDING_TTL_S: Final = 60.0


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


async def _send_response(
    send: Send,
    status: int,
    media_type: str,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", media_type.encode("latin-1")),
        (b"content-length", b"%d" % len(body)),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_problem(
    send: Send, status: int, slug: str, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = msgspec.json.encode(make_problem(status, detail, slug=slug))
    await _send_response(send, status, PROBLEM_MEDIA_TYPE, body, extra)


class IdempotencyMiddleware:
    """The ASGI middleware (module docstring); built by Litestar's ``DefineMiddleware``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: IdempotencyStore,
        max_body_bytes: int,
        ttl_s: float = DEFAULT_TTL_S,
        pending_ttl_s: float = DEFAULT_PENDING_TTL_S,
    ) -> None:
        self.app = app
        self._store = store
        self._max_body = max_body_bytes
        self._ttl_s = ttl_s
        self._pending_ttl_s = pending_ttl_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("method") not in _METHODS:
            await self.app(scope, receive, send)
            return
        key = _header(scope, IDEMPOTENCY_HEADER.encode())
        if key is None:
            await self.app(scope, receive, send)
            return
        if not _KEY_RE.fullmatch(key):
            await _send_problem(
                send,
                400,
                "invalid-request",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )
            return
        messages, complete = await self._read_body(receive)
        replay = _replaying(messages, receive)
        if not complete:  # above the limit (or gone): the app answers, nothing is stored
            await self.app(scope, replay, send)
            return
        body = b"".join(_body_of(m) for m in messages)
        fingerprint = request_fingerprint(
            str(scope.get("method", "")),
            str(scope.get("path", "")),
            bytes(scope.get("query_string", b"")),
            body,
        )
        scope_key = key_scope(_header(scope, b"authorization") or b"", key)
        existing = await self._store.reserve(scope_key, fingerprint, ttl_s=self._pending_ttl_s)
        if existing is not None:
            await self._answer_taken(existing, fingerprint, send)
            return
        captured = _Captured(send)
        try:
            await self.app(scope, replay, captured.send)
        except BaseException:
            await self._store.release(scope_key)
            raise
        if 200 <= captured.status < 300:
            record = IdempotencyRecord(
                fingerprint=fingerprint,
                status=captured.status,
                media_type=captured.media_type,
                body=b"".join(captured.body),
            )
            await self._store.complete(scope_key, record, ttl_s=self._ttl_s)
        else:
            await self._store.release(scope_key)

    async def _read_body(self, receive: Receive) -> tuple[list[ReceiveMessage], bool]:
        """The messages carrying the request body, and whether it is all there within the
        limit (reading stops at the limit or a disconnect; the rest is left to the app)."""
        messages: list[ReceiveMessage] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, False
            size += len(_body_of(message))
            if size > self._max_body:
                return messages, False
            if not message.get("more_body", False):
                return messages, True

    async def _answer_taken(
        self, existing: IdempotencyRecord, fingerprint: str, send: Send
    ) -> None:
        if existing.fingerprint != fingerprint:
            await _send_problem(
                send,
                422,
                "idempotency-key-reused",
                "this Idempotency-Key was used for a different request",
            )
        elif existing.pending:
            await _send_problem(
                send,
                409,
                "idempotency-key-in-use",
                "a request with this Idempotency-Key is still being processed",
                [(b"retry-after", b"1")],
            )
        else:
            await _send_response(
                send,
                existing.status,
                existing.media_type,
                existing.body,
                [(REPLAYED_HEADER, b"true")],
            )


def _body_of(message: ReceiveMessage) -> bytes:
    return bytes(cast("bytes", message.get("body", b"")))


def request_fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """What identifies a request for its Idempotency-Key: SHA-256 of method, path, query
    and body."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query):
        digest.update(part + b"\n")
    digest.update(body)
    return digest.hexdigest()


def key_scope(authorization: bytes, key: bytes) -> str:
    """The store key of an Idempotency-Key: scoped to the caller's credentials."""
    return hashlib.sha256(authorization + b"\n" + key).hexdigest()


def _replaying(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """A receive that gives the app the messages already read, then the real stream."""
    pending = list(messages)

    async def replay() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class _Captured:
    """Wraps `send`: forwards everything and keeps the status, media type and body."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.media_type = "application/json"
        self.body: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            for name, value in message.get("headers", ()):
                if bytes(name).lower() == b"content-type":
                    self.media_type = bytes(value).decode("latin-1")
        elif message["type"] == "http.response.body":
            self.body.append(bytes(message.get("body", b"")))
        await self._send(message)
