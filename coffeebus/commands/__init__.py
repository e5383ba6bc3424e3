"""Subcommands of the `coffeebus` CLI, one module each.

A command module exposes `register(subparsers)`: it adds its parser and sets
`handler=<function(args) -> int>` as the parser default. `coffeebus.cli` imports the modules
listed in `COMMANDS` in order, so adding a command (`gateway`, `api`, `consume`, `run`,
`chat`) is one new module and one line here. Handlers import heavy dependencies themselves,
so `coffeebus --help` stays fast.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable
from typing import Protocol

__all__ = ["COMMANDS", "CommandModule", "ExitCode", "Handler"]

COMMANDS: tuple[str, ...] = (
    "coffeebus.commands.run",
    "coffeebus.commands.gateway",
    "coffeebus.commands.api",
    "coffeebus.commands.consume",
    "coffeebus.commands.topology",
    "coffeebus.commands.dlq",
    "coffeebus.commands.events",
    "coffeebus.commands.chat",
)


class ExitCode(enum.IntEnum):
    """Process exit codes shared by every subcommand."""

    OK = 0
    #: The cluster differs from what is declared (and the command was asked to say so).
    DRIFT = 1
    #: Bad command line or bad configuration file (argparse also exits 2).
    USAGE = 2
    #: A service the command needs (Kafka, ...) did not answer.
    UNREACHABLE = 3


Handler = Callable[[argparse.Namespace], int]


class CommandModule(Protocol):
    """What a module listed in COMMANDS provides."""

    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add this command's parser to `subparsers`, with `handler` as its default."""
