"""`coffeebus run`: every role in one process — the quickest way to a working system."""

from __future__ import annotations

import argparse

from coffeebus.commands.common import SETTINGS_HELP, add_config_option, load_or_exit, run_async

__all__ = ["DEMO_USERS", "register"]

DESCRIPTION = """\
Run every role in this one process: a gate (TCP 8000, WebSocket 8001), the HTTP API (18080)
and one member of every consumer group (msg, fanout, ack, query, group). By default on the
embedded in-memory bus and stores — nothing else to install, and nothing kept after Ctrl-C.
With --services real, the same roles run on Kafka, MongoDB and Redis (start them with
`make services-up`, apply topics with `coffeebus topology apply`).
Demo users are created unless --no-demo is given.
"""

#: (user id, nick name, token) of the users `coffeebus run` creates for a first try.
DEMO_USERS: tuple[tuple[int, str, str], ...] = (
    (1001, "alice", "alice-demo-token"),
    (1002, "bob", "bob-demo-token"),
    (1003, "carol", "carol-demo-token"),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `run`."""
    parser = subparsers.add_parser(
        "run",
        help="run every role in one process (embedded by default)",
        description=DESCRIPTION,
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.add_argument(
        "--services",
        choices=("embedded", "real"),
        default="embedded",
        help="embedded: in-memory bus and stores (default); real: Kafka, MongoDB, Redis",
    )
    parser.add_argument(
        "--no-demo", action="store_true", help="do not create the demo users alice, bob, carol"
    )
    parser.set_defaults(handler=_handle)


def _banner(gate_host: str, tcp: int, ws: int, api_host: str, api: int, *, demo: bool) -> str:
    lines = [
        "CoffeeBus is running. Connect a CoffeeChat client to:",
        f"  TCP        {gate_host}:{tcp}",
        f"  WebSocket  ws://{gate_host}:{ws}/",
        f"  HTTP API   http://{api_host}:{api}/  (OpenAPI: /schema)",
    ]
    if demo:
        lines.append("Log in (AuthTokenReq 0x0101) as a demo user:")
        lines += [
            f"  user_id={uid:<5} token={token:<18} ({nick})" for uid, nick, token in DEMO_USERS
        ]
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def _handle(args: argparse.Namespace) -> int:
    settings = load_or_exit(args).with_gate_id()
    from coffeebus.roles import (  # noqa: PLC0415  # keeps --help fast
        ApiRole,
        ConsumerRole,
        GateRole,
        Role,
        serve,
    )
    from coffeebus.wiring import Mode, open_runtime  # noqa: PLC0415
    from consumers.registry import available_groups  # noqa: PLC0415
    from store.ids import UserId  # noqa: PLC0415
    from store.users import UserImport  # noqa: PLC0415

    mode = Mode(args.services)
    demo = not args.no_demo

    async def main() -> None:
        async with open_runtime(settings, mode, client_id="all-in-one") as rt:
            if demo:
                for uid, nick, token in DEMO_USERS:
                    await rt.users.upsert(
                        UserImport(user_id=UserId(uid), nick_name=nick, token=token)
                    )
            gate = GateRole(rt)
            # Consumers first: they stop last, after the gate has drained its connections.
            roles: list[Role] = [ConsumerRole(rt, group) for group in available_groups()]
            roles += [gate, ApiRole(rt)]
            gs, api = settings.gateway, settings.api
            host = gs.advertised_host or ("127.0.0.1" if gs.host in ("0.0.0.0", "::") else gs.host)

            def banner() -> str:
                g = gate.gate
                return _banner(host, g.tcp_port, g.ws_port, api.host, api.port, demo=demo)

            await serve(roles, ready=banner)

    return run_async(main())
