"""The start-up status line: rewritten in place on a terminal, one line elsewhere, and kept
below the log records printed meanwhile."""

from __future__ import annotations

import io
import logging

from coffeebus.logs import ConsoleHandler, TextFormatter
from coffeebus.progress import StartupProgress, process_age


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_line_is_rewritten_and_records_go_above_it() -> None:
    screen = Terminal()
    progress = StartupProgress("CoffeeBus (embedded)", screen)
    handler = ConsoleHandler(screen)
    handler.setFormatter(TextFormatter())
    handler.status = progress
    progress.step("consumer groups 1/2 (msg)")
    handler.emit(
        logging.makeLogRecord(
            {"msg": "careful", "levelno": 30, "levelname": "WARNING", "name": "root"}
        )
    )
    progress.step("consumer groups 2/2 (fanout)")
    progress.done()
    erase = "\r\x1b[2K"
    parts = screen.getvalue().split(erase)
    assert parts[:2] == ["", "Starting CoffeeBus (embedded): consumer groups 1/2 (msg)…"]
    assert parts[2].endswith(" WARNING root: careful\n")  # on a line of its own
    assert parts[3:] == [
        "Starting CoffeeBus (embedded): consumer groups 1/2 (msg)…",  # drawn again below it
        "Starting CoffeeBus (embedded): consumer groups 2/2 (fanout)…",
        "",  # gone: the banner takes its place
    ]


def test_elsewhere_one_line_says_it_starts() -> None:
    log = io.StringIO()
    progress = StartupProgress("CoffeeBus (real)", log)
    progress.step("the stores")
    progress.done()
    assert log.getvalue() == "Starting CoffeeBus (real)…\n"


def test_the_clock_counts_from_the_process_start() -> None:
    age = process_age()
    assert age is not None
    assert age > 0
    assert StartupProgress("x", io.StringIO()).elapsed >= age


def test_json_logs_get_no_progress_text() -> None:
    for stream in (io.StringIO(), Terminal()):
        progress = StartupProgress("CoffeeBus (embedded)", stream, silent=True)
        progress.step("the stores")
        progress.done()
        assert stream.getvalue() == ""
