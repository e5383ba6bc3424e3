"""`coffeebus gateway`: one gate process on Kafka, MongoDB and Redis."""

from __future__ import annotations

import argparse

from coffeebus.commands.common import SETTINGS_HELP, add_config_option, load_or_exit, run_async

__all__ = ["register"]

DESCRIPTION = """\
Run one gate: TCP (default port 8000) and WebSocket (8001) listeners speaking the CoffeeChat
protocol. It logs clients in by token against the users store (Redis cache in front of
MongoDB), keeps their routes in Redis, publishes their frames to the im.up.* topics and
writes the frames of its own topic im.gate.<gate_id> to its connections. SIGTERM or SIGINT
drains: it stops accepting, tells each client (KickNotify) and closes it, commits, exits.
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
        help="unique id of this gate (default: [gateway] gate_id, else host name + pid)",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    settings = load_or_exit(args)
    if args.gate_id:
        import msgspec  # noqa: PLC0415

        settings = msgspec.structs.replace(
            settings, gateway=msgspec.structs.replace(settings.gateway, gate_id=args.gate_id)
        )
    from coffeebus.roles import GateRole, serve  # noqa: PLC0415  # keeps --help fast
    from coffeebus.wiring import Mode, open_runtime  # noqa: PLC0415

    async def main() -> None:
        settings_with_id = settings.with_gate_id()
        gate_id = settings_with_id.gateway.gate_id
        async with open_runtime(settings_with_id, Mode.REAL, client_id=f"gate-{gate_id}") as rt:
            await serve([GateRole(rt)])

    return run_async(main())
