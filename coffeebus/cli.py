"""The `coffeebus` command: one entry point, a subcommand per role or tool.

Subcommands live in `coffeebus.commands.<name>` modules (listed in
`coffeebus.commands.COMMANDS`); this module only builds the parser, sets up logging and maps
the handler's result to the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import cast

from coffeebus.commands import COMMANDS, CommandModule, ExitCode, Handler

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
CoffeeBus: an instant-messaging backend built around a Kafka message bus. Gates hold client
connections (CoffeeChat wire protocol over TCP and WebSocket) and publish frames to Kafka;
stateless consumer groups (msg, fanout, ack, query, group, room, timer, push, biz, call,
webhook, projection) do the logic, Redis holds routes and the hot end of the timelines, MongoDB the
rest. topology.yaml declares every topic and group.
"""

EPILOG = """\
Run `coffeebus COMMAND --help` for a command's options.
Environment: KAFKA_BOOTSTRAP_SERVERS, COFFEEBUS_TOPOLOGY, COFFEEBUS_TOPOLOGY_OVERLAY.
"""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="coffeebus",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v one level below the default (roles log INFO by default, so -v "
        "is DEBUG; other commands WARNING, so -v is INFO), -vv everything, the Kafka "
        "client's own debug logs included",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in COMMANDS:
        cast(CommandModule, importlib.import_module(name)).register(subparsers)
    return parser


def _configure_logging(verbosity: int) -> None:
    # Commands that run roles configure logging again from their settings (`coffeebus.logs`).
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbosity < 2:
        # aiokafka logs every failed connection attempt at ERROR; the command reports the
        # outcome itself in one line, so keep the client quiet unless asked.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `coffeebus` with `argv` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    handler = cast(Handler, args.handler)
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `coffeebus topology lag | head`
        sys.stderr.close()
        return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
