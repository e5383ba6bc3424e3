"""`coffeebus events docs`: write (or check) the generated business-event documents."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coffeebus.commands import ExitCode

__all__ = ["register"]

DESCRIPTION = """\
Generate the published contract of the business events (biz.* topics and webhooks) from the
code: docs/events.schema.json (JSON Schema of every event, from schemas/bizevents.py) and
docs/asyncapi.yaml (AsyncAPI 2.6: one channel per biz.* topic of topology.yaml). With
--check, write nothing and exit 1 if the files in DIR are not what the code generates.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `events docs`."""
    parser = subparsers.add_parser(
        "events",
        help="business events: generate their JSON Schema and AsyncAPI documents",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    docs = actions.add_parser("docs", help="write docs/events.schema.json and docs/asyncapi.yaml")
    docs.add_argument("--dir", type=Path, default=Path("docs"), help="output folder (docs)")
    docs.add_argument(
        "--check", action="store_true", help="only check that the files are up to date"
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from bus.topology import load_topology  # noqa: PLC0415  # keeps --help fast
    from coffeebus.eventdocs import render, stale  # noqa: PLC0415

    topology = load_topology()
    folder: Path = args.dir
    if args.check:
        outdated = stale(topology, folder)
        for name in outdated:
            print(f"{folder / name} is stale: run `coffeebus events docs`", file=sys.stderr)
        return ExitCode.DRIFT if outdated else ExitCode.OK
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in render(topology).items():
        (folder / name).write_text(text, encoding="utf-8")
        print(f"wrote {folder / name}")
    return ExitCode.OK
