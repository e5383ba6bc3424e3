"""`coffeebus gateway`: one gate process on Kafka, MongoDB and Redis."""

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
Run one gate: TCP (default port 8000) and WebSocket (8001) listeners speaking the CoffeeChat
protocol. It logs clients in by token against the users store (Redis cache in front of
MongoDB), keeps their routes in Redis, publishes their frames to the im.up.* topics and
writes the frames of its own topic im.gate.<gate_id> (created at start) to its connections.
Run as many gates as connections need; each needs a unique gate id. SIGTERM or SIGINT
drains: it stops accepting, tells each client (KickNotify) and closes it within
[gateway] drain_timeout_s, then exits.

Listeners, limits and timers are [gateway] settings: host, tcp_port, ws_port,
advertised_host (the address published in the gate list), tls_cert/tls_key,
max_frame_size, max_connections, login_timeout_s, heartbeat_interval_s, idle_heartbeats,
rate_limit_per_s, rate_limit_burst, send_queue_frames, multi_login, drain_timeout_s.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `gateway`."""
    parser = subparsers.add_parser(
        "gateway",
        help="run a gate (TCP + WebSocket listeners) on the real services",
        description=DESCRIPTION,
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.add_argument(
        "--gate-id",
        metavar="ID",
        help="unique id of this gate, letters, digits, '-' and '_' (names its topic "
        "im.gate.ID; default: [gateway] gate_id, else host name + pid). A stable id per "
        "replica (e.g. the pod name) reuses its topic across restarts",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    settings = load_or_exit(args)
    if args.gate_id:
        import msgspec  # noqa: PLC0415

        settings = msgspec.structs.replace(
            settings, gateway=msgspec.structs.replace(settings.gateway, gate_id=args.gate_id)
        )
    settings = settings.with_gate_id()
    from coffeebus.roles import GateRole, serve  # noqa: PLC0415  # keeps --help fast
    from coffeebus.wiring import Mode, open_runtime  # noqa: PLC0415

    client_id = f"gate-{settings.gateway.gate_id}"

    async def main() -> None:
        async with (
            services_unreachable(),
            open_runtime(settings, Mode.REAL, client_id=client_id) as runtime,
        ):
            await serve([GateRole(runtime)])

    return run_async(main())
