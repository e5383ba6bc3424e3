"""`coffeebus dlq show|replay`: what the dead-letter topics hold, and putting records back."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import textwrap
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from coffeebus.commands import ExitCode
from coffeebus.commands.common import add_cluster_options
from coffeebus.commands.output import print_json, table

__all__ = ["register"]

_T = TypeVar("_T")

DESCRIPTION = """\
A record a consumer group's handler rejects (it can never be handled: undecodable, invalid)
goes to <topic>.dlq with its key, value and headers unchanged plus dlq.* headers: the error,
its type, and the source topic, partition, offset and group. The partition then moves on.
These commands read those topics without joining any consumer group.
"""

EXIT_CODES = """\
exit codes:
  0  done
  2  bad command line, topology file, or a topic that has no dead-letter topic
  3  Kafka unreachable
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    add_cluster_options(common)
    reading = argparse.ArgumentParser(add_help=False)
    reading.add_argument(
        "--from-offset",
        metavar="N",
        type=_non_negative_int,
        default=0,
        help="start at this offset of each partition (default: the oldest record kept)",
    )
    reading.add_argument(
        "--limit",
        metavar="N",
        type=_non_negative_int,
        help="at most N records (default: all, up to the end when the command starts)",
    )

    parser = subparsers.add_parser(
        "dlq",
        help="dead-letter topics: count, list and replay rejected records",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    show = actions.add_parser(
        "show",
        parents=[common, reading],
        help="count the records of every dead-letter topic, or list one's records",
        description=_wrap(
            "Without TOPIC: one row per declared dead-letter topic with its record "
            "count. With TOPIC: one row per record — offset, time, key, source "
            "topic/partition/offset, group, error type and error."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument(
        "topic",
        metavar="TOPIC",
        nargs="?",
        help="list this dead-letter topic's records (im.up.msg.dlq, or im.up.msg)",
    )
    show.set_defaults(handler=_show)

    replay = actions.add_parser(
        "replay",
        parents=[common, reading],
        help="publish dead-lettered records to their source topic again",
        description=_wrap(
            "Publish the records of TOPIC's dead-letter topic, up to its end when "
            "the command starts, to the source topic again: same key, value and headers, the "
            "dlq.* headers replaced by dlq.replayed_from=<dlq>:<partition>:<offset>. Fix the "
            "cause first (a deployment, a setting): handlers are idempotent, so replaying a "
            "record twice does no harm, and one that fails again is dead-lettered again. The "
            "records stay in the dead-letter topic (retention removes them); the output gives "
            "the --from-offset of the next replay."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument(
        "topic",
        metavar="TOPIC",
        help="a dead-letter topic (im.up.msg.dlq) or the topic it belongs to (im.up.msg)",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed, publish nothing"
    )
    replay.set_defaults(handler=_replay)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _run(args: argparse.Namespace, work: Callable[[Any], Coroutine[Any, Any, _T]]) -> _T | int:
    from bus.admin import ClusterUnreachableError  # noqa: PLC0415  # keeps --help fast
    from bus.topology import TopologyError, load_topology  # noqa: PLC0415

    try:
        topology = load_topology(args.file)
    except TopologyError as exc:
        return _fail(str(exc), ExitCode.USAGE)
    from aiokafka.errors import KafkaConnectionError  # noqa: PLC0415

    try:
        return asyncio.run(work(topology))
    except (KafkaConnectionError, ClusterUnreachableError):
        return _fail(f"Kafka is not reachable at {args.bootstrap}", ExitCode.UNREACHABLE)
    except KeyError as exc:  # an undeclared topic, or one without a dead-letter topic
        return _fail(str(exc.args[0]) if exc.args else str(exc), ExitCode.USAGE)


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "from_offset": args.from_offset,
        "limit": args.limit,
        "request_timeout": args.timeout,
    }


def _fail(message: str, code: ExitCode) -> ExitCode:
    print(f"coffeebus: error: {message}", file=sys.stderr)
    return code


def _show(args: argparse.Namespace) -> int:
    from coffeebus.dlq import read, summary  # noqa: PLC0415

    if args.topic is None:
        counts = _run(args, lambda t: summary(t, args.bootstrap, request_timeout=args.timeout))
        if isinstance(counts, int):
            return counts
        if args.json:
            print_json(counts)
        else:
            rows = [[c.topic, c.source, c.records] for c in counts]
            print(table(["DLQ", "SOURCE", "RECORDS"], rows, numeric={2}))
            print(f"\n{sum(c.records for c in counts)} dead-lettered records")
        return ExitCode.OK
    letters = _run(args, lambda t: read(t, args.bootstrap, args.topic, **_selection(args)))
    if isinstance(letters, int):
        return letters
    if args.json:
        print_json(letters)
        return ExitCode.OK
    rows = [
        [
            f"{d.partition}:{d.offset}",
            dt.datetime.fromtimestamp(d.timestamp_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            d.key,
            f"{d.source_topic}[{d.source_partition}]@{d.source_offset}",
            d.group,
            d.error_type,
            d.error,
        ]
        for d in letters
    ]
    print(table(["AT", "TIME", "KEY", "SOURCE", "GROUP", "ERROR TYPE", "ERROR"], rows))
    return ExitCode.OK


def _replay(args: argparse.Namespace) -> int:
    from coffeebus.dlq import replay  # noqa: PLC0415

    result = _run(
        args,
        lambda t: replay(t, args.bootstrap, args.topic, dry_run=args.dry_run, **_selection(args)),
    )
    if isinstance(result, int):
        return result
    if args.json:
        print_json(result)
        return ExitCode.OK
    verb = "would replay" if result.dry_run else "replayed"
    print(f"{verb} {result.replayed} records from {result.topic} to {result.source}")
    for partition, offset in sorted(result.next_offsets.items()):
        print(f"  partition {partition}: next replay --from-offset {offset}")
    return ExitCode.OK
