"""`coffeebus run`: every role in one process — the quickest way to a working system."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

import msgspec

from coffeebus.commands.common import (
    SETTINGS_HELP,
    add_config_option,
    load_or_exit,
    run_async,
    services_unreachable,
)
from coffeebus.logs import console_status
from coffeebus.progress import StartupProgress

if TYPE_CHECKING:
    from coffeebus.settings import Settings
    from coffeebus.wiring import Mode

__all__ = ["DEMO_USERS", "DemoUser", "register"]

DESCRIPTION = """\
Run every role in this one process: a gate (TCP 8000, WebSocket 8001), the HTTP API (18080)
and one member of every consumer group (msg, fanout, ack, query, group, room, projection,
timer, push, biz, call, webhook). It shows its progress while it starts, then prints where
to connect and how to log in, and serves until Ctrl-C (SIGINT) or SIGTERM, which drain the
gate's connections and the consumers' batches and exit with 0.

--services embedded (the default): the in-memory bus and stores — nothing else to install,
and nothing is kept after the process stops.
--services real: the same roles on Kafka, MongoDB and Redis ([kafka], [mongo], [redis]
settings; `make services-up` starts local ones). The topics of topology.yaml are applied
first (idempotent; --no-apply skips it, as when an operator applies them).
Demo users (alice, bob, carol) are created or reset unless --no-demo is given.
"""


class DemoUser(msgspec.Struct, frozen=True):
    """A user `coffeebus run` creates, so there is someone to log in as and someone to chat
    with."""

    user_id: int
    nick: str
    token: str


#: The users `coffeebus run` creates for a first try (their tokens are public: demo only).
DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser(1001, "alice", "alice-demo-token"),
    DemoUser(1002, "bob", "bob-demo-token"),
    DemoUser(1003, "carol", "carol-demo-token"),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `run`."""
    parser = subparsers.add_parser(
        "run",
        help="run every role in one process (embedded by default; --services real)",
        description=DESCRIPTION,
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.add_argument(
        "--services",
        choices=("embedded", "real"),
        default="embedded",
        help="embedded: in-memory bus and stores in this process (default); real: Kafka, "
        "MongoDB and Redis from the settings",
    )
    parser.add_argument(
        "--no-demo",
        action="store_true",
        help="do not create the demo users alice (1001), bob (1002) and carol (1003)",
    )
    parser.add_argument(
        "--no-apply",
        action="store_true",
        help="with --services real: do not apply topology.yaml to Kafka first (the topics "
        "must exist already)",
    )
    parser.set_defaults(handler=_handle)


def banner(
    settings: Settings,
    *,
    tcp_port: int,
    ws_port: int,
    mode: str,
    demo: bool,
    elapsed_s: float | None = None,
) -> str:
    """What `coffeebus run` prints once every role has started: where to connect, how to log
    in. `tests/coffeebus/test_run.py` parses it, as a person reads it."""
    gs, api = settings.gateway, settings.api
    gate_host = gs.advertised_host or _reachable(gs.host)
    api_url = f"http://{_reachable(api.host)}:{api.port}"
    where = (
        "in-memory bus and stores: nothing is kept after it stops"
        if mode == "embedded"
        else f"Kafka {settings.kafka.bootstrap_servers}, MongoDB database "
        f"{settings.mongo.database!r}, Redis key prefix {settings.redis.key_prefix!r}"
    )
    took = f" Ready in {elapsed_s:.1f} s." if elapsed_s is not None else ""
    lines = [
        f"CoffeeBus is running ({mode}: {where}).{took}",
        "Connect a CoffeeChat client or the SDK (docs/sdk.md) to:",
        f"  TCP gate        {gate_host}:{tcp_port}",
        f"  WebSocket gate  ws://{gate_host}:{ws_port}/",
        f"  HTTP API        {api_url}/",
        f"  API docs        {api_url}/schema  (OpenAPI JSON: {api_url}/schema/openapi.json)",
        f"  health          {api_url}/healthz  {api_url}/readyz",
    ]
    if demo:
        lines.append("Log in with AuthTokenReq (0x0101): user_id and token of a demo user:")
        width = max(len(u.nick) for u in DEMO_USERS)
        lines += [f"  {u.nick:<{width}}  user_id={u.user_id}  token={u.token}" for u in DEMO_USERS]
        alice, bob = DEMO_USERS[0], DEMO_USERS[1]
        gate = f"{gate_host}:{tcp_port}"
        # `coffeebus chat` asks the API for group members' names; its default is 18080.
        if api_url != "http://127.0.0.1:18080":
            gate += f" --api {api_url}"
        lines += [
            f"Chat as {alice.nick} and {bob.nick}:",
            f"  in a browser    {api_url}/demo  (two windows, one per user)",
            "  in terminals    "
            f"uv run coffeebus chat --gate {gate} --user {alice.user_id} --token {alice.token}",
            "                  "
            f"uv run coffeebus chat --gate {gate} --user {bob.user_id} --token {bob.token}",
        ]
    else:
        lines.append("No demo users (--no-demo): import users with POST /v1/users.")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def _reachable(host: str) -> str:
    """The address to print for a listener bound to `host` (a wildcard is not dialable)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _handle(args: argparse.Namespace) -> int:
    settings = load_or_exit(args).with_gate_id()
    # Say something at once: the imports below and the services' start take a moment.
    progress = StartupProgress(f"CoffeeBus ({args.services})", silent=settings.log.format == "json")
    console_status(progress)
    progress.step("loading")
    try:
        from coffeebus.wiring import Mode  # noqa: PLC0415  # keeps --help fast

        mode = Mode(args.services)
        if mode is Mode.EMBEDDED and settings.log.level != "DEBUG" and args.verbose == 0:
            # One process: its in-memory consumer groups' rebalances say nothing to a person.
            logging.getLogger("bus.memory").setLevel(logging.WARNING)
        if mode is Mode.REAL and not args.no_apply:
            progress.step("applying topology.yaml to Kafka")
            problem = _apply_topology(settings)
            if problem is not None:
                return problem
        return run_async(_main(settings, mode, demo=not args.no_demo, progress=progress))
    finally:
        progress.done()
        console_status(None)


def _apply_topology(settings: Settings) -> int | None:
    """Create or raise the declared topics; an exit code when Kafka refuses or is away."""
    import asyncio  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from bus.admin import AdminError, ClusterUnreachableError, apply  # noqa: PLC0415
    from bus.topology import load_topology  # noqa: PLC0415
    from coffeebus.commands import ExitCode  # noqa: PLC0415

    try:
        actions = asyncio.run(apply(load_topology(), settings.kafka.bootstrap_servers))
    except ClusterUnreachableError as exc:
        print(f"coffeebus: error: {exc}", file=sys.stderr)
        return ExitCode.UNREACHABLE
    except AdminError as exc:
        print(f"coffeebus: error: Kafka refused the topology: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    stuck = [a for a in actions if a.kind == "cannot-fix"]
    for action in stuck:
        # Fewer partitions than declared and the like: the roles still run, ordering and
        # scaling are what the operator must look at (`coffeebus topology show`).
        print(f"coffeebus: warning: {action.topic}: {action.detail}", file=sys.stderr)
    return None


async def _main(settings: Settings, mode: Mode, *, demo: bool, progress: StartupProgress) -> None:
    from coffeebus.roles import ApiRole, ConsumerRole, GateRole, Role, serve  # noqa: PLC0415
    from coffeebus.wiring import open_runtime  # noqa: PLC0415
    from consumers.registry import available_groups  # noqa: PLC0415
    from store.ids import UserId  # noqa: PLC0415
    from store.users import UserImport  # noqa: PLC0415

    progress.step("connecting to Kafka, MongoDB and Redis" if mode == "real" else "the stores")
    async with services_unreachable(), open_runtime(settings, mode, client_id="all-in-one") as rt:
        if demo:
            for user in DEMO_USERS:
                await rt.users.upsert(
                    UserImport(user_id=UserId(user.user_id), nick_name=user.nick, token=user.token)
                )
        progress.step("preparing the roles")
        gate = GateRole(rt)
        # Consumers first: they stop last, after the gate has drained its connections.
        roles: list[Role] = [ConsumerRole(rt, group) for group in available_groups()]
        roles += [gate, ApiRole(rt)]

        groups = sum(isinstance(role, ConsumerRole) for role in roles)

        def step(role: Role, before: int, total: int) -> None:
            if isinstance(role, ConsumerRole):
                progress.step(f"consumer groups {before + 1}/{groups} ({role.group})")
            else:
                what = {"gateway": "the gate", "api": "the HTTP API"}.get(role.name, role.name)
                progress.step(f"{what} ({before + 1}/{total})")

        def ready() -> str:
            g = gate.gate
            text = banner(
                settings,
                tcp_port=g.tcp_port,
                ws_port=g.ws_port,
                mode=mode,
                demo=demo,
                elapsed_s=progress.elapsed,
            )
            # The banner takes the status line's place; the log is the log again.
            progress.done()
            console_status(None)
            return text

        await serve(roles, ready=ready, progress=step)
