"""The web demo client: a page served by the API that chats over the WebSocket gate.

The page is plain HTML, CSS and JavaScript (``producers/static/demo/``). It speaks the
CoffeeChat binary protocol in the browser: one binary WebSocket message is one frame
(PROTOCOL.md, "Frame"), whose body is protobuf encoded by protobuf.js from the project's own
``.proto`` files, loaded at run time from ``/demo/proto/`` — so the browser can never drift
from `schemas/proto`. protobuf.js and long.js are vendored copies of the npm packages pinned
in ``producers/static/package-lock.json`` (``make vendor``, `producers.vendor`; docs/web-demo.md).

==========  ======================  =====================================================
method      path                    serves
==========  ======================  =====================================================
GET, HEAD   /demo                   the page
GET         /demo/gate              WebSocket addresses of the live gates, least loaded first
GET         /demo/users?id=…        names and avatars of people the user shares a group with
GET         /demo/static/{file}     the page's scripts, styles and the vendored libraries
GET         /demo/proto/{file}      schemas/proto/**/*.proto
==========  ======================  =====================================================

None of these needs the API key: the page and the gate list are what any client of the
gates may see (the seed's iplist is public too), and the page authenticates to the gate
with a user id and token like every client. They are left out of the OpenAPI document,
which describes the business API.

``/demo/users`` is how the demo clients (this page and ``coffeebus chat``) name the people
of a group: the protocol names a message's sender only in a live push (``from_nick_name``)
and single-chat peers in the user list (0x0601), never a group's members. It answers only
a user who proves who they are (``X-CoffeeBus-User-Id`` and ``X-CoffeeBus-Token``, the
login token), and only about themselves and the members of their groups: ids outside those
are left out, as group info (0x0509) leaves out groups the requester is not in.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec
from litestar import HttpMethod, MediaType, Request, Response, Router, get, route
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.static_files import create_static_files_router

from producers.deps import Pipeline, StoresDep
from producers.problems import problem_response
from schemas.generate import PROTO_DIR
from store.ids import UserId

__all__ = ["DEMO_DIR", "MAX_PROFILES", "DemoGates", "DemoProfile", "DemoProfiles", "demo_router"]

#: The page and its assets.
DEMO_DIR: Final = Path(__file__).resolve().parent / "static" / "demo"
#: Files every page of the API shares (the favicon).
COMMON_DIR: Final = Path(__file__).resolve().parent / "static" / "common"
#: Ids one ``/demo/users`` request may ask about.
MAX_PROFILES: Final = 100

#: The page runs nothing inline and loads only its own origin's files; it may open
#: WebSockets anywhere, since the gate listens on another port (or host) than the API.
#: 'unsafe-eval' is for protobuf.js: from .proto files loaded at run time it compiles each
#: message's encoder and decoder with `new Function` (a pbjs static module would not, at the
#: price of a generated file to keep in step with schemas/proto).
_CSP: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self'; "
    "img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

#: Assets change with the code: let browsers revalidate rather than keep stale copies.
_REVALIDATE: Final = CacheControlHeader(no_cache=True)


class DemoGates(msgspec.Struct, frozen=True):
    """``GET /demo/gate``: where the page connects, least loaded gate first."""

    ws_urls: list[str]


@route(
    "/",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    include_in_schema=False,
    sync_to_thread=False,
    cache_control=_REVALIDATE,
)
def _page() -> Response[bytes]:
    """The page (GET, and HEAD for link checkers and probes). Read per request: it is
    small, and a changed file is served at once."""
    return Response(
        (DEMO_DIR / "index.html").read_bytes(),
        # Litestar adds the charset to text/* media types itself.
        media_type=MediaType.HTML,
        headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"},
    )


@get("/gate", include_in_schema=False)
async def _gate(request: Request[Any, Any, Any], stores: StoresDep) -> DemoGates:
    """The live gates' WebSocket addresses, least loaded first (as ``GET /v1/gates``).

    A gate that binds every interface without ``[gateway] advertised_host`` advertises this
    machine's host name, which a browser may not resolve; the page then gets the name the
    browser reached the API by (the gate runs on this machine: `coffeebus run` prints
    ``ws://127.0.0.1:8001/``, and so does the page).
    """
    here = socket.gethostname().lower()
    browser_host = request.url.hostname
    urls = []
    for gate in await stores.routes.live_gates():
        url = urlsplit(gate.ws_addr)
        if browser_host and url.hostname == here and url.port is not None:
            host = f"[{browser_host}]" if ":" in browser_host else browser_host
            url = url._replace(netloc=f"{host}:{url.port}")
        urls.append(urlunsplit(url))
    return DemoGates(ws_urls=urls)


class DemoProfile(msgspec.Struct, frozen=True):
    """What a chat client shows of a person. The id is a decimal string: JavaScript numbers
    lose u64 ids above 2**53."""

    user_id: str
    nick_name: str
    avatar_url: str


class DemoProfiles(msgspec.Struct, frozen=True):
    """``GET /demo/users``: the profiles asked for that the caller may see."""

    users: list[DemoProfile]


@get("/users", include_in_schema=False)
async def _users(
    request: Request[Any, Any, Any],
    stores: StoresDep,
    pipeline: NamedDependency[Pipeline | None],
    ids: Annotated[list[int], QueryParameter(name="id", max_items=MAX_PROFILES)],
) -> Response[Any]:
    """Names of the caller and of the members of the caller's groups (module docstring)."""
    raw_user = request.headers.get("x-coffeebus-user-id", "")
    token = request.headers.get("x-coffeebus-token", "")
    if not raw_user.isdigit() or not token:
        return problem_response(401, "X-CoffeeBus-User-Id and X-CoffeeBus-Token are required")
    caller = UserId(int(raw_user))
    check = await stores.users.check_token(caller, token)
    if not check.ok:
        return problem_response(401, "not the user's current token")
    visible = {caller}
    if pipeline is not None:
        for group_id in await pipeline.groups.groups_of(caller):
            visible.update(await pipeline.groups.members(group_id))
    wanted = [UserId(i) for i in dict.fromkeys(ids) if UserId(i) in visible]
    users = await stores.users.list_users(wanted)
    return Response(
        DemoProfiles(users=[DemoProfile(str(u.user_id), u.nick_name, u.avatar_url) for u in users]),
        headers={"Cache-Control": "no-store"},
    )


def demo_router() -> Router:
    """A new router serving the demo under ``/demo`` (one per application)."""
    return Router(
        path="/demo",
        route_handlers=[
            _page,
            _gate,
            _users,
            create_static_files_router(
                path="/static",
                directories=[DEMO_DIR, COMMON_DIR],
                name="demo-static",
                cache_control=_REVALIDATE,
            ),
            create_static_files_router(
                path="/proto",
                directories=[PROTO_DIR],
                name="demo-proto",
                cache_control=_REVALIDATE,
            ),
        ],
        include_in_schema=False,
    )
