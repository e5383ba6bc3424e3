"""`coffeebus topology apply|show|lag`: the declared topology against a Kafka cluster."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import msgspec

from bus.admin import (
    AdminError,
    ClusterUnreachableError,
    GroupLag,
    ShowReport,
    TopicLag,
    TopicRow,
    apply,
    lag,
    show,
)
from bus.topology import Topology, TopologyError, load_topology
from coffeebus.commands import ExitCode
from coffeebus.commands.output import print_json, table

__all__ = ["register"]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
_T = TypeVar("_T")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `topology` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bootstrap",
        metavar="HOST:PORT[,...]",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP),
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or %(default)s)",
    )
    common.add_argument(
        "--file",
        metavar="PATH",
        help="topology file (default: $COFFEEBUS_TOPOLOGY or the repository's topology.yaml)",
    )
    common.add_argument(
        "--overlay",
        metavar="PATH",
        help="production overlay merged over the file: defaults, partitions, replication "
        "and configs only (default: $COFFEEBUS_TOPOLOGY_OVERLAY)",
    )
    common.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive_float,
        default=10.0,
        help="limit for reaching the cluster and for each request (default: %(default)s)",
    )
    common.add_argument(
        "--json", action="store_true", help="print machine-readable JSON instead of tables"
    )

    parser = subparsers.add_parser(
        "topology",
        help="apply topology.yaml to Kafka, show drift, show consumer lag",
        description="topology.yaml declares every topic, dead-letter topic, gate-topic "
        "template and consumer group. These commands compare it with a Kafka cluster.",
    )
    actions = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    apply_parser = actions.add_parser(
        "apply",
        parents=[common],
        help="create missing topics, raise partitions, set configs (idempotent)",
        description=_wrap(
            "Make the cluster match the declared topics: create the missing ones with "
            "their configs, raise partition counts that are too low, and reset configs that "
            "differ to the declared set. Fewer partitions or another replication factor on the "
            "cluster cannot be fixed in place: they are reported and the exit code is 1."
        ),
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply_parser.set_defaults(handler=_apply)

    show_parser = actions.add_parser(
        "show",
        parents=[common],
        help="declared topics vs the cluster, drift marked",
        description=_wrap(
            "One row per declared topic (dead-letter topics included): partitions, "
            "replication factor and configs on the cluster against the declared ones. Topics "
            "in the declared namespaces (im.*, biz.*) that the file does not declare are listed "
            "as UNDECLARED; gate topics are counted apart; internal __* topics are skipped."
        ),
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show_parser.add_argument(
        "--check", action="store_true", help="exit with 1 when any drift is found"
    )
    show_parser.set_defaults(handler=_show)

    lag_parser = actions.add_parser(
        "lag",
        parents=[common],
        help="consumer lag per group and topic, laggiest first",
        description=_wrap(
            "How far behind each declared consumer group is: one row per group and topic "
            "with its partitions, how many of them have a committed offset, the total lag, "
            "the largest lag of one partition and which partition that is, the group's state "
            "and live members; laggiest first, then a totals line. Lag is the log end offset "
            "minus the committed offset. A partition the group never committed counts its lag "
            "from the start of the log; a group with no committed offset at all shows "
            "COMMITTED 'none'. --partitions adds, per partition, the committed offset, the "
            "log end offset, the lag and the member that owns the partition."
        ),
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lag_parser.add_argument(
        "--group",
        action="append",
        metavar="NAME",
        help="only this declared group (msg, fanout, ...); repeatable (default: all)",
    )
    lag_parser.add_argument(
        "--partitions",
        action="store_true",
        help="also list every partition: committed offset, log end, lag, owning member",
    )
    lag_parser.set_defaults(handler=_lag)


_EXIT_CODES = textwrap.dedent(
    """\
    exit codes:
      0  done, no drift
      1  drift found (show --check), or drift apply cannot fix
      2  bad command line or topology file
      3  Kafka unreachable
    """
)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _run(
    args: argparse.Namespace, work: Callable[[Topology], Coroutine[Any, Any, _T]]
) -> _T | ExitCode:
    """Load the topology and run `work`, turning expected failures into one-line errors."""
    try:
        topology = load_topology(args.file, overlay=args.overlay)
    except TopologyError as exc:
        return _fail(str(exc), ExitCode.USAGE)
    try:
        return asyncio.run(work(topology))
    except ClusterUnreachableError as exc:
        return _fail(str(exc), ExitCode.UNREACHABLE)
    except AdminError as exc:
        return _fail(f"Kafka refused: {exc}", ExitCode.USAGE)
    except KeyError as exc:  # UndeclaredTopicError: e.g. --group with an unknown name
        return _fail(str(exc), ExitCode.USAGE)


def _fail(message: str, code: ExitCode) -> ExitCode:
    print(f"coffeebus: error: {message}", file=sys.stderr)
    return code


def _apply(args: argparse.Namespace) -> int:
    result = _run(args, lambda t: apply(t, args.bootstrap, request_timeout=args.timeout))
    if isinstance(result, ExitCode):
        return result
    if args.json:
        print_json(result)
    elif result:
        print(table(["ACTION", "TOPIC", "DETAIL"], [[a.kind, a.topic, a.detail] for a in result]))
    else:
        print("nothing to do: the cluster matches the topology")
    stuck = any(a.kind == "cannot-fix" for a in result)
    return ExitCode.DRIFT if stuck else ExitCode.OK


def _show(args: argparse.Namespace) -> int:
    report = _run(args, lambda t: show(t, args.bootstrap, request_timeout=args.timeout))
    if isinstance(report, ExitCode):
        return report
    if args.json:
        print_json({"drift": report.drift, **_to_builtins(report)})
    else:
        print(_show_text(report))
    return ExitCode.DRIFT if args.check and report.drift else ExitCode.OK


def _show_text(report: ShowReport) -> str:
    rows = [
        [
            "ok" if row.status == "ok" else row.status.upper(),
            row.topic,
            _versus(row.partitions, row.declared_partitions),
            _versus(row.replication_factor, row.declared_replication_factor),
            _config_text(row),
        ]
        for row in report.rows
    ]
    counts = {s: sum(r.status == s for r in report.rows) for s in ("ok", "drift", "missing")}
    undeclared = sum(r.status == "undeclared" for r in report.rows)
    summary = (
        f"{sum(counts.values())} declared topics: {counts['ok']} ok, {counts['drift']} drift, "
        f"{counts['missing']} missing; {undeclared} undeclared"
    )
    for name, topics in report.template_instances.items():
        summary += f"; {len(topics)} {name} topics"
    if report.foreign:
        summary += f"; {len(report.foreign)} other topics ignored"
    header = ["STATUS", "TOPIC", "PARTITIONS", "RF", "CONFIG DRIFT"]
    return table(header, rows) + "\n\n" + summary


def _versus(actual: int | None, declared: int | None) -> str:
    if actual is None or declared is None or actual == declared:
        return str(actual if actual is not None else declared)
    return f"{actual} (want {declared})"


def _config_text(row: TopicRow) -> str:
    return ", ".join(
        f"{c.name}={c.actual} (want {c.declared})"
        if c.declared is not None
        else f"{c.name}={c.actual} (undeclared)"
        for c in row.configs
    )


async def _lag_when_coordinated(topology: Topology, args: argparse.Namespace) -> list[GroupLag]:
    """`lag`, asked again while Kafka says its group coordinator is not there yet.

    A broker that has never had a consumer group creates its offsets topic at the first
    request for a coordinator and answers "not available" until it exists (a second or so):
    on a fresh cluster the first `topology lag` would fail for nothing. Retriable errors are
    retried for up to --timeout; anything else fails at once.
    """
    deadline = asyncio.get_running_loop().time() + args.timeout
    while True:
        try:
            return await lag(topology, args.bootstrap, args.group, request_timeout=args.timeout)
        except ClusterUnreachableError:
            raise
        except AdminError as exc:
            retriable = getattr(exc.__cause__, "retriable", False)
            if not retriable or asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.5)


def _lag(args: argparse.Namespace) -> int:
    groups = _run(args, lambda t: _lag_when_coordinated(t, args))
    if isinstance(groups, ExitCode):
        return groups
    # Laggiest first; ties keep the declared order (sorted() is stable).
    groups = sorted(groups, key=lambda g: -g.total)
    if args.json:
        print_json(_lag_json(groups))
    else:
        print(_lag_text(groups, partitions=args.partitions))
    return ExitCode.OK


def _lag_json(groups: list[GroupLag]) -> dict[str, object]:
    return {
        "total_lag": sum(g.total for g in groups),
        "groups": [
            {
                **_to_builtins(g),
                "lag": g.total,
                "never_committed": g.never_committed,
                "topics": g.topics(),
            }
            for g in groups
        ],
    }


def _lag_text(groups: list[GroupLag], *, partitions: bool) -> str:
    """The summary table (one row per group and topic, laggiest first) and a totals line."""
    rows = sorted(
        ((g, t) for g in groups for t in g.topics()),
        key=lambda row: -row[1].lag,
    )
    header = [
        "GROUP",
        "TOPIC",
        "PARTITIONS",
        "COMMITTED",
        "LAG",
        "MAX LAG",
        "ON PARTITION",
        "STATE",
        "MEMBERS",
    ]
    summary = table(
        header,
        [
            [
                g.group,
                t.topic,
                t.partitions,
                _committed_text(t),
                t.lag,
                t.max_lag,
                t.max_lag_partition,
                g.state,
                g.members,
            ]
            for g, t in rows
        ],
        numeric={2, 4, 5, 6, 8},
    )
    parts = [summary, _lag_totals(groups)]
    if partitions:
        detail = [
            [g.group, p.topic, p.partition, p.committed, p.end, p.lag, p.owner]
            for g in groups
            for p in g.partitions
        ]
        parts.append(
            table(
                ["GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "OWNER"],
                detail,
                numeric={2, 3, 4, 5},
            )
        )
    return "\n\n".join(parts)


def _committed_text(topic: TopicLag) -> str:
    """How many partitions have a committed offset: 'none' stands out in a column of n/n."""
    if not topic.committed_partitions:
        return "none"
    return f"{topic.committed_partitions}/{topic.partitions}"


def _lag_totals(groups: list[GroupLag]) -> str:
    lagging = sum(g.total > 0 for g in groups)
    never = [g.group for g in groups if g.never_committed]
    line = (
        f"total lag {sum(g.total for g in groups)} over {len(groups)} "
        f"{_plural(len(groups), 'group')}, {lagging} lagging"
    )
    if never:
        line += f"; never committed: {', '.join(never)} (lag counted from the start of the log)"
    return line


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def _to_builtins(value: object) -> dict[str, object]:
    result = msgspec.to_builtins(value)
    assert isinstance(result, dict)
    return result
