"""`--help` of the role commands explains every option, the settings, signals and exit codes."""

from __future__ import annotations

import argparse

import pytest

from coffeebus.cli import build_parser
from coffeebus.settings import Settings

ROLES = ("run", "gateway", "api", "consume")


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    [actions] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub: argparse.ArgumentParser = actions.choices[name]
    return sub


@pytest.mark.parametrize("name", [*ROLES, "dlq"])
def test_every_option_has_a_real_explanation(name: str) -> None:
    parsers = [subparser(name)]
    for action in parsers[0]._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += action.choices.values()
    for parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            text = action.help or ""
            assert text != argparse.SUPPRESS
            assert len(text.split()) >= 3, f"{parser.prog} {action.option_strings}: {text!r}"


@pytest.mark.parametrize("name", ROLES)
def test_role_help_names_every_settings_section_signals_and_exit_codes(name: str) -> None:
    text = " ".join(subparser(name).format_help().split())
    for section in Settings.__struct_fields__:
        assert section in text, section
    for needle in ("--config PATH", "COFFEEBUS_<SECTION>__<FIELD>", "docs/operations.md"):
        assert needle in text
    assert "SIGTERM" in text
    assert "exit codes" in text
    assert "3 Kafka, MongoDB or Redis did not answer at start" in text
