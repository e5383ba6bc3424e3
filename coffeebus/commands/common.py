"""Options and start-up shared by the commands that run CoffeeBus roles."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from coffeebus.commands import ExitCode
from coffeebus.logs import configure_logging
from coffeebus.settings import Settings, SettingsError, load_settings
from telemetry.taskdump import install_task_dump

__all__ = [
    "SETTINGS_HELP",
    "ServicesUnreachableError",
    "add_cluster_options",
    "add_config_option",
    "load_or_exit",
    "run_async",
    "services_unreachable",
]

log = logging.getLogger(__name__)

SETTINGS_HELP = """\
settings:
  Defaults, then the TOML file (--config or $COFFEEBUS_CONFIG), then the environment:
  COFFEEBUS_<SECTION>__<FIELD> (e.g. COFFEEBUS_GATEWAY__TCP_PORT=9000,
  COFFEEBUS_LOG__FORMAT=json) and the conventional KAFKA_BOOTSTRAP_SERVERS, MONGO_URL,
  REDIS_URL. Sections: kafka, mongo, redis, gateway, api, login, messaging, hot, rooms,
  biz, webhooks, push, calls, log, observability; docs/operations.md lists every field with its
  default.
  COFFEEBUS_TOPOLOGY and COFFEEBUS_TOPOLOGY_OVERLAY choose another topology.yaml and its
  production overlay.

metrics and health:
  [observability] metrics_port (COFFEEBUS_OBSERVABILITY__METRICS_PORT) serves /metrics
  (Prometheus), /healthz and /readyz on metrics_host (COFFEEBUS_OBSERVABILITY__METRICS_HOST,
  default 127.0.0.1; 0.0.0.0 lets a Prometheus on another host scrape). Port 0, the
  default, runs no listener; each process of one host needs a port of its own.
  docs/observability.md lists the metrics and what to alert on.

signals:
  SIGTERM or SIGINT (Ctrl-C) drains: gates tell their clients and close them, consumers
  finish and commit their batches; then the process exits with 0. A second Ctrl-C while
  draining stops at once (exit 130).

exit codes:
  0  stopped by a signal after draining
  2  bad command line or settings
  3  Kafka, MongoDB or Redis did not answer at start
"""


class ServicesUnreachableError(Exception):
    """A backing service (Kafka, MongoDB, Redis) did not answer; the message names it."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config PATH``: the TOML settings file."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML settings file, one [section] per settings group (default: "
        "$COFFEEBUS_CONFIG, else built-in defaults; the environment overrides both)",
    )


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap``, ``--file``, ``--timeout``, ``--json``: the options of the commands
    that talk to a Kafka cluster directly (no settings file, no stores)."""
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT[,...]",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or %(default)s)",
    )
    parser.add_argument(
        "--file",
        metavar="PATH",
        help="topology file (default: $COFFEEBUS_TOPOLOGY or the repository's topology.yaml)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=positive_float,
        default=10.0,
        help="limit for each request to the cluster (default: %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print machine-readable JSON instead of tables"
    )


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def load_or_exit(args: argparse.Namespace) -> Settings:
    """The process's settings, with logging configured; exit 2 with one line if invalid."""
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"coffeebus: bad settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log, verbosity=args.verbose)
    return settings


@contextlib.asynccontextmanager
async def services_unreachable() -> AsyncIterator[None]:
    """Turn "cannot reach Kafka / MongoDB / Redis" into `ServicesUnreachableError`.

    The clients raise their own connection errors from deep inside start-up; an operator
    needs one line saying which service at which address, not three tracebacks.
    """
    from aiokafka.errors import KafkaConnectionError  # noqa: PLC0415  # keeps --help fast
    from pymongo.errors import ConnectionFailure  # noqa: PLC0415
    from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415

    try:
        yield
    except KafkaConnectionError as exc:
        raise ServicesUnreachableError(f"Kafka did not answer: {exc}") from exc
    except ConnectionFailure as exc:
        raise ServicesUnreachableError(f"MongoDB did not answer: {_first_line(exc)}") from exc
    except RedisConnectionError as exc:
        raise ServicesUnreachableError(f"Redis did not answer: {exc}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).split(", Timeout:")[0].splitlines()[0]


def run_async(main: Coroutine[Any, Any, None]) -> int:
    """Run a role's main coroutine (on uvloop when installed); the process's exit code.

    Until `coffeebus.roles.serve` installs its draining handlers, SIGTERM and SIGINT cancel
    start-up (connecting, creating indexes), so a process stopped while it starts exits 0
    without a traceback too. SIGUSR1 logs every asyncio task's stack (`telemetry.taskdump`).
    """
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(_cancel_on_signal(main))
    except ServicesUnreachableError as exc:
        log.debug("start-up failed", exc_info=exc.__cause__)
        print(f"coffeebus: error: {exc}", file=sys.stderr)
        return ExitCode.UNREACHABLE
    return ExitCode.OK


async def _cancel_on_signal(main: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    install_task_dump(loop)
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
        log.info("stopped by a signal while starting")
    finally:
        # serve() replaced and then removed these handlers if it ran; removing is harmless.
        for signum in signals:
            loop.remove_signal_handler(signum)
