"""Options and start-up shared by the commands that run CoffeeBus roles."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from coffeebus.logs import configure_logging
from coffeebus.settings import Settings, SettingsError, load_settings

__all__ = ["SETTINGS_HELP", "add_config_option", "load_or_exit", "run_async"]

SETTINGS_HELP = """\
Settings come from defaults, then the TOML file (--config or $COFFEEBUS_CONFIG), then the
environment: COFFEEBUS_<SECTION>__<FIELD> (e.g. COFFEEBUS_GATEWAY__TCP_PORT=9000,
COFFEEBUS_LOG__FORMAT=json) and KAFKA_BOOTSTRAP_SERVERS, MONGO_URL, REDIS_URL. Sections and
fields: kafka, mongo, redis, gateway, api, log (see docs/operations.md).
"""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config PATH``: the TOML settings file."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML settings file (default: $COFFEEBUS_CONFIG, else built-in defaults)",
    )


def load_or_exit(args: argparse.Namespace) -> Settings:
    """The process's settings, with logging configured; exit 2 with one line if invalid."""
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"coffeebus: bad settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log, verbosity=args.verbose)
    return settings


def run_async(main: Coroutine[Any, Any, None]) -> int:
    """Run a role's main coroutine on uvloop when installed (only process entries choose)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
    return 0
