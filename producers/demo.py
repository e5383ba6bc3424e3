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
GET         /demo/static/{file}     the page's scripts, styles and the vendored libraries
GET         /demo/proto/{file}      schemas/proto/**/*.proto
==========  ======================  =====================================================

None of these needs the API key: the page and the gate list are what any client of the
gates may see (the seed's iplist is public too), and the page authenticates to the gate
with a user id and token like every client. They are left out of the OpenAPI document,
which describes the business API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec
from litestar import HttpMethod, MediaType, Response, Router, get, route
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from producers.deps import StoresDep
from schemas.generate import PROTO_DIR

__all__ = ["DEMO_DIR", "DemoGates", "demo_router"]

#: The page and its assets.
DEMO_DIR: Final = Path(__file__).resolve().parent / "static" / "demo"

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
async def _gate(stores: StoresDep) -> DemoGates:
    """The live gates' WebSocket addresses, least loaded first (as ``GET /v1/gates``)."""
    return DemoGates(ws_urls=[gate.ws_addr for gate in await stores.routes.live_gates()])


def demo_router() -> Router:
    """A new router serving the demo under ``/demo`` (one per application)."""
    return Router(
        path="/demo",
        route_handlers=[
            _page,
            _gate,
            create_static_files_router(
                path="/static",
                directories=[DEMO_DIR],
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
