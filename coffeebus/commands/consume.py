"""`coffeebus consume GROUP...`: members of one or more consumer groups."""

from __future__ import annotations

import argparse

from coffeebus.commands.common import SETTINGS_HELP, add_config_option, load_or_exit, run_async

__all__ = ["register"]

DESCRIPTION = """\
Run one member of each named consumer group on Kafka, MongoDB and Redis. Handlers are
stateless: scale a group by starting more processes (up to its topics' partition count;
`coffeebus topology lag` shows how far behind each partition is). Offsets are committed only
after a batch's effects are durable, so a killed member loses nothing: its partitions go to
the others and the uncommitted records are handled again, idempotently.
"""


def _groups_help() -> str:
    """The groups and what each does, from topology.yaml (the single source of truth)."""
    from bus.topology import TopologyError, load_topology  # noqa: PLC0415

    try:
        groups = load_topology().groups
    except TopologyError as exc:
        return f"(topology.yaml cannot be read: {exc})"
    width = max(map(len, groups))
    lines = [f"  {name:<{width}}  {spec.does}" for name, spec in groups.items()]
    return "groups (from topology.yaml, which also names their Kafka group ids and topics):\n" + (
        "\n".join(lines)
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `consume`."""
    from consumers.registry import known_groups  # noqa: PLC0415

    parser = subparsers.add_parser(
        "consume",
        help="run members of consumer groups (msg, fanout, ack, query, group, ...)",
        description=DESCRIPTION + "\n" + _groups_help(),
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.add_argument(
        "groups", nargs="+", metavar="GROUP", choices=known_groups(), help="group names"
    )
    parser.add_argument(
        "--static-member-id",
        metavar="ID",
        help="static group membership (Kafka group.instance.id = ID-GROUP): a member "
        "restarted with the same id within the session timeout gets its partitions back "
        "without a rebalance — use a stable id per replica (e.g. the pod name) for rolling "
        "restarts",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    settings = load_or_exit(args)
    from coffeebus.roles import ConsumerRole, Role, serve  # noqa: PLC0415  # keeps --help fast
    from coffeebus.wiring import Mode, open_runtime  # noqa: PLC0415

    groups: list[str] = list(dict.fromkeys(args.groups))

    async def main() -> None:
        client_id = "consume-" + "-".join(groups)
        async with open_runtime(settings, Mode.REAL, client_id=client_id) as runtime:
            roles: list[Role] = [
                ConsumerRole(
                    runtime,
                    group,
                    static_member_id=(
                        f"{args.static_member_id}-{group}" if args.static_member_id else None
                    ),
                )
                for group in groups
            ]
            await serve(roles)

    return run_async(main())
