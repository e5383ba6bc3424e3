"""The API docs at ``/schema``: ReDoc, served by CoffeeBus itself.

Litestar's default documentation pages load their scripts from CDNs and fonts from Google:
on a server that reaches nothing outside, ``/schema`` was a blank page. Here the only page
is ReDoc (``/schema`` and ``/schema/redoc``) plus the document itself
(``/schema/openapi.json``, ``/schema/openapi.yaml``), and every file the page loads comes
from this server: the ReDoc build vendored from npm into ``producers/static/apidocs/vendor/``
(pinned by ``producers/static/package-lock.json``; `producers.vendor`) and the favicon. The
page uses the browser's own fonts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RedocRenderPlugin,
    YamlRenderPlugin,
)
from litestar.static_files import create_static_files_router

__all__ = ["APIDOCS_DIR", "COMMON_DIR", "SCHEMA_PATH", "OfflineRedoc", "render_plugins"]

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
#: The docs page's own files (the vendored ReDoc).
APIDOCS_DIR: Final = STATIC_DIR / "apidocs"
#: Files every page of the API shares (the favicon).
COMMON_DIR: Final = STATIC_DIR / "common"
#: Where Litestar serves the OpenAPI document and its pages.
SCHEMA_PATH: Final = "/schema"


#: Nothing but this server: ReDoc's footer shows its maker's logo from a CDN, which this
#: policy keeps the browser from requesting (the style below hides the empty image). The
#: page's one inline script hands the document to ReDoc; ReDoc inlines its styles and runs
#: its search index in a worker made from a blob.
_CSP: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'"
)
_STYLE: Final = (
    "<style>body { margin: 0; padding: 0 } "
    "a[href^='https://redocly.com'] img { display: none }</style>"
)


class OfflineRedoc(RedocRenderPlugin):
    """ReDoc from this server's own files, without Google fonts or a CDN."""

    def __init__(self) -> None:
        static = f"{SCHEMA_PATH}/static"
        super().__init__(
            path=["/", "/redoc"],
            js_url=f"{static}/vendor/redoc.standalone.js",
            google_fonts=False,
            # The head starts with the favicon: the policy goes with it, before any script.
            favicon=(
                f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
                f"<link rel='icon' type='image/svg+xml' href='{static}/favicon.svg'>"
            ),
            style=_STYLE,
        )

    def receive_router(self, router: Router) -> None:
        """Serve the page's files under ``/schema/static/`` next to it."""
        router.register(
            create_static_files_router(
                path="/static",
                directories=[APIDOCS_DIR, COMMON_DIR],
                name="apidocs-static",
                include_in_schema=False,
                cache_control=CacheControlHeader(max_age=3600),
            )
        )


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """ReDoc at ``/schema``, the document as JSON and YAML; nothing that loads from a CDN."""
    return [OfflineRedoc(), JsonRenderPlugin(), YamlRenderPlugin()]
