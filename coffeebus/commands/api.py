"""`coffeebus api`: the HTTP server API for business servers."""

from __future__ import annotations

import argparse

from coffeebus.commands.common import (
    SETTINGS_HELP,
    add_config_option,
    load_or_exit,
    run_async,
    services_unreachable,
)

__all__ = ["register"]

DESCRIPTION = """\
Run the HTTP server API for business servers (default 127.0.0.1:18080) on Kafka, MongoDB
and Redis: user import and tokens, online devices, the gate list, business push, system
messages, groups, push tokens, admin revoke (docs/api.md, docs/integration.md). The
OpenAPI document is served at /schema, liveness at /healthz and readiness (MongoDB and
Redis answer) at /readyz. It holds no state: run as many as load needs behind a load
balancer.

[api] settings: host, port, api_keys (Bearer keys of the business servers). With no API
key configured it refuses to listen on anything but loopback, so an open API is never
exposed by accident.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `api`."""
    parser = subparsers.add_parser(
        "api",
        help="run the HTTP server API on the real services",
        description=DESCRIPTION,
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    settings = load_or_exit(args)
    from coffeebus.roles import ApiRole, serve  # noqa: PLC0415  # keeps --help fast
    from coffeebus.wiring import Mode, open_runtime  # noqa: PLC0415

    async def main() -> None:
        async with (
            services_unreachable(),
            open_runtime(settings, Mode.REAL, client_id="api") as runtime,
        ):
            await serve([ApiRole(runtime)])

    return run_async(main())
