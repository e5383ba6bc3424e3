"""`coffeebus consume GROUP...`: members of one or more consumer groups."""

from __future__ import annotations

import argparse

from coffeebus.commands.common import (
    SETTINGS_HELP,
    add_config_option,
    load_or_exit,
    run_async,
    services_unreachable,
)

__all__ = ["register", "static_instance_id"]

DESCRIPTION = """\
Run one member of each named consumer group on Kafka, MongoDB and Redis. Handlers are
stateless: scale a group by starting more processes (useful up to the partition count of
its topics; `coffeebus topology lag` shows how far behind each partition is and which
member owns it). Offsets are committed only after a batch's effects are durable, so a
killed member loses nothing: its partitions go to the others and the uncommitted records
are handled again, idempotently. A poison record goes to <topic>.dlq with its error
(`coffeebus dlq show` lists them).

static membership:
  Without --static-member-id every start and stop of a member rebalances its whole group:
  all members pause while partitions move. With it, the member joins with the Kafka
  group.instance.id ID-GROUP (one per group it runs); when it stops, the broker keeps its
  partitions for it until the session timeout (10 s) passes, and the same id coming back
  within that time gets the same partitions without a rebalance of the others. Use it for
  rolling restarts and for members that restart often: give each replica a stable id of
  its own (the pod name of a StatefulSet, the host name). Two live processes must never
  share an id (the broker fences the older one). A member that stays away longer than the
  session timeout is removed and the rest rebalance as usual.
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


def static_instance_id(member_id: str, group: str) -> str:
    """The Kafka group.instance.id of static member `member_id` in `group`.

    One process may run several groups; each group needs its own instance id, and one
    replica's ids must stay the same across restarts.
    """
    return f"{member_id}-{group}"


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
        "groups",
        nargs="+",
        metavar="GROUP",
        choices=known_groups(),
        help="the consumer groups this process joins, one member each (listed above)",
    )
    parser.add_argument(
        "--static-member-id",
        metavar="ID",
        help="join as a static member (Kafka group.instance.id = ID-GROUP), so a restart "
        "with the same ID within the session timeout keeps its partitions and does not "
        "rebalance the group (see 'static membership' above); default: dynamic membership",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    settings = load_or_exit(args)
    from coffeebus.roles import ConsumerRole, Role, serve  # noqa: PLC0415  # keeps --help fast
    from coffeebus.wiring import Mode, open_runtime  # noqa: PLC0415

    groups: list[str] = list(dict.fromkeys(args.groups))
    member_id: str | None = args.static_member_id
    client_id = "consume-" + "-".join(groups)

    async def main() -> None:
        async with (
            services_unreachable(),
            open_runtime(settings, Mode.REAL, client_id=client_id) as runtime,
        ):
            roles: list[Role] = [
                ConsumerRole(
                    runtime,
                    group,
                    static_member_id=static_instance_id(member_id, group) if member_id else None,
                )
                for group in groups
            ]
            await serve(roles)

    return run_async(main())
