"""The HTTP server API for business servers (Litestar on uvicorn, port 18080 by default).

`create_app` builds the application from settings and the stores it is given, so the
embedded process (memory stores) and the real one (MongoDB + Redis) wire it the same way;
`serve_api` runs an application with uvicorn after the loopback-only check. The process
(``coffeebus api``, or every role in one with ``coffeebus run``) is wired in
`coffeebus.wiring` / `coffeebus.roles`.

Endpoints (docs/api.md has bodies and errors; the OpenAPI document is at ``/schema``):

==========  ===============================  ===========================================
method      path                             does
==========  ===============================  ===========================================
POST        /user/register                   seed-compatible registration (legacy)
PUT         /v1/users/{user_id}              import / update a user
GET         /v1/users/{user_id}              read a user
POST        /v1/users/{user_id}/token        rotate the user's token (old sessions close)
DELETE      /v1/users/{user_id}              delete a user (producers.admin)
POST        /v1/users/{user_id}/kick         close a user's connections
POST|DELETE /v1/users/{user_id}/ban          ban / unban a user
GET         /v1/users/{user_id}/devices      the user's online devices
POST|GET|DELETE /v1/users/{user_id}/push-tokens  device push tokens (register/list/remove)
GET         /v1/gates                        live gates, least loaded first (iplist)
POST        /v1/push                         business push (s2c), optionally stored
POST        /v1/messages                     system message into a single chat or group
POST        /v1/messages/{conv}/{seq}/revoke admin revoke
POST        /v1/groups                       create a group (201 with its id)
PATCH       /v1/groups/{group_id}            update a group's name, notice, avatar, modes
DELETE      /v1/groups/{group_id}            disband a group
POST        /v1/groups/{group_id}/members    add members
DELETE      /v1/groups/{group_id}/members    remove members (?user_id=...)
GET         /v1/groups?user_id=              a user's groups
GET         /v1/groups/{group_id}            a group and its members
GET         /healthz                         liveness (no auth)
GET         /readyz                          readiness: the stores answer (no auth)
GET         /metrics                         Prometheus metrics of the process (no auth)
GET         /demo                            the web demo client (no auth; producers.demo)
==========  ===============================  ===========================================

The messaging endpoints (push … groups) and session administration (kick, ban, delete; a
token rotation that closes the old token's connections) exist when the app is given a
`Pipeline` (the bus and the group and message stores). Every POST and PATCH honours
``Idempotency-Key`` (`producers.idempotency`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import uvicorn
from litestar import Litestar, Request, Response, Router, get
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from producers import admin
from producers.apidocs import SCHEMA_PATH, render_plugins
from producers.auth import ApiKeyGuard, check_bind_address
from producers.demo import demo_router
from producers.deps import Pipeline, Stores, StoresDep
from producers.groups import (
    add_members,
    create_group,
    disband_group,
    get_group,
    list_groups,
    remove_members,
    update_group,
)
from producers.idempotency import IdempotencyMiddleware
from producers.jsonbody import StrictJsonRequest
from producers.messaging import admin_revoke, push, send_message
from producers.models import MAX_BODY_BYTES, Gate, GatesResponse, Health
from producers.problems import EXCEPTION_HANDLERS, PROBLEMS, problem_response
from producers.push_tokens import list_push_tokens, register_push_token, remove_push_token
from producers.rooms import close_room, create_room, get_room, list_rooms
from producers.settings import ApiSettings
from producers.users import devices, get_user, legacy_register, put_user, rotate_token
from store.idempotency import IdempotencyStore
from store.memory.idempotency import MemoryIdempotencyStore
from store.push_tokens import PushTokenStore
from store.routes import RouteStore
from store.users import UserStore

__all__ = ["Pipeline", "ReadinessCheck", "create_app", "serve_api"]

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
"""Raises unless a dependency answers (e.g. `store.redis.client.ping` bound to a client)."""

#: How long /readyz waits for each check before calling the dependency down.
READINESS_TIMEOUT_S: Final = 2.0


@get(
    "/v1/gates",
    summary="Live gates, least loaded first (iplist)",
    tags=["gates"],
    responses=PROBLEMS,
)
async def gates(stores: StoresDep) -> GatesResponse:
    """``GET /v1/gates``."""
    return GatesResponse(
        gates=[
            Gate(
                gate_id=info.gate_id,
                tcp_addr=info.tcp_addr,
                ws_addr=info.ws_addr,
                connections=info.connections,
            )
            for info in await stores.routes.live_gates()
        ]
    )


@get(
    "/metrics",
    summary="Prometheus metrics of this process",
    tags=["health"],
    include_in_schema=False,
)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The process's metrics in the Prometheus text format, or OpenMetrics when the scraper
    asks for it (docs/observability.md), as the metrics listener serves them."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    # Litestar names the charset of text/* itself: keep it from appearing twice.
    media_type = content_type.replace("; charset=utf-8", "")
    return Response(encoder(REGISTRY), media_type=media_type)


@get("/healthz", summary="Liveness", tags=["health"])
async def healthz() -> Health:
    """The process serves requests."""
    return Health(status="ok")


def _readyz(checks: Sequence[tuple[str, ReadinessCheck]]) -> HTTPRouteHandler:
    @get("/readyz", summary="Readiness: every backing store answers", tags=["health"])
    async def readyz() -> Response[Any]:
        """200 when every store answers within the timeout, else 503 naming those that
        did not."""
        results = await asyncio.gather(
            *(asyncio.wait_for(check(), READINESS_TIMEOUT_S) for _, check in checks),
            return_exceptions=True,
        )
        down = []
        for (name, _), result in zip(checks, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("readiness: %s is down: %r", name, result)
                down.append(name)
        if down:
            return problem_response(
                503, f"not ready: {', '.join(down)} unreachable", slug="not-ready"
            )
        return Response(Health(status="ready"))

    return readyz


def create_app(
    settings: ApiSettings,
    user_store: UserStore,
    route_store: RouteStore,
    *,
    pipeline: Pipeline | None = None,
    idempotency: IdempotencyStore | None = None,
    push_tokens: PushTokenStore | None = None,
    readiness_checks: Sequence[tuple[str, ReadinessCheck]] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Litestar:
    """The API application on these stores.

    Args:
        settings: the ``[api]`` settings; ``api_keys`` non-empty turns authentication on.
        user_store: where users live.
        route_store: routes of online devices and the live-gate registry.
        pipeline: the bus and the group / message stores of the messaging endpoints; without
            it those endpoints are not served.
        push_tokens: devices' offline-push tokens; without it ``/v1/users/{id}/push-tokens``
            is not served.
        idempotency: where ``Idempotency-Key`` responses are kept (Redis when several API
            processes serve one deployment); default: in this process.
        readiness_checks: (name, check) pairs that ``/readyz`` runs.
        max_body_bytes: larger request bodies are refused with 413.
    """
    guard = ApiKeyGuard(settings.api_keys)
    stores = Stores(user_store, route_store, push_tokens)
    handlers: list[HTTPRouteHandler] = [
        legacy_register,
        put_user,
        get_user,
        # with the bus, a rotation also closes the old token's connections on every gate
        rotate_token if pipeline is None else admin.rotate_token,
        devices,
        gates,
    ]
    if push_tokens is not None:
        handlers += [register_push_token, list_push_tokens, remove_push_token]
    if pipeline is not None:
        handlers += [
            admin.kick_user,
            admin.ban_user,
            admin.unban_user,
            admin.delete_user,
            push,
            send_message,
            admin_revoke,
            create_group,
            update_group,
            disband_group,
            add_members,
            remove_members,
            list_groups,
            get_group,
        ]
        if pipeline.rooms is not None:
            handlers += [create_room, list_rooms, get_room, close_room]
    business = Router(
        path="/",
        route_handlers=handlers,
        guards=[guard.as_guard()],
        security=[{"bearer": []}] if guard.enabled else None,
    )
    openapi = OpenAPIConfig(
        title="CoffeeBus server API",
        version="1",
        description=(
            "User import, tokens, presence, session administration (kick, ban, delete), the "
            "gate list, business push, system messages, groups, chat rooms and admin revoke for "
            "business servers. Every POST and PATCH honours an `Idempotency-Key` header."
        ),
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="API key")
            }
        ),
        path=SCHEMA_PATH,
        render_plugins=render_plugins(),
    )
    return Litestar(
        route_handlers=[
            business,
            healthz,
            _readyz(tuple(readiness_checks)),
            metrics,
            demo_router(),
        ],
        dependencies={
            "stores": Provide(lambda: stores, use_cache=True, sync_to_thread=False),
            "pipeline": Provide(lambda: pipeline, use_cache=True, sync_to_thread=False),
        },
        middleware=[
            DefineMiddleware(
                IdempotencyMiddleware,
                store=idempotency or MemoryIdempotencyStore(),
                max_body_bytes=max_body_bytes,
            )
        ],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        # JSON bodies are checked strictly before validation (producers.jsonbody)
        request_class=StrictJsonRequest,
        openapi_config=openapi,
        request_max_body_size=max_body_bytes,
        debug=False,
        logging_config=None,  # the process configures logging, not the framework
    )


class _Server(uvicorn.Server):
    """uvicorn's server, telling when it has started (the application's start-up ran and the
    socket accepts)."""

    def __init__(self, config: uvicorn.Config, ready: asyncio.Event | None) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._ready is not None and self.started:
            self._ready.set()


async def serve_api(
    app: Litestar, settings: ApiSettings, *, ready: asyncio.Event | None = None
) -> None:
    """Serve `app` on ``settings.host:settings.port`` until cancelled or signalled; `ready`
    is set once it answers requests.

    SIGINT/SIGTERM (uvicorn's own handlers while it serves) and cancellation both shut down
    gracefully: in-flight requests finish, the listening socket is closed.

    Raises `producers.auth.UnsafeBindError` before binding when no API key is configured and
    the host is not loopback.
    """
    check_bind_address(settings.host, settings.api_keys)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # the process's logging configuration applies
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    server = _Server(config, ready)
    # Bind here rather than inside uvicorn: a port in use fails the caller at once (OSError)
    # instead of being logged by uvicorn while the process goes on without its API.
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.create_server((settings.host, settings.port), family=family, backlog=2048)
    logger.info("HTTP API listening on http://%s:%d", settings.host, settings.port)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        # Cancelled by the embedding process: let uvicorn finish in-flight requests and
        # close its listening socket instead of abandoning it mid-serve.
        server.should_exit = True
        await serving
        raise
    finally:
        # The socket is ours: uvicorn closes it only if it got as far as serving on it (a
        # stop during application startup left it open until garbage collection).
        sock.close()
