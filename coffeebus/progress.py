"""Progress of a process while it starts, on the terminal: one line that rewrites itself.

`coffeebus run` starts a dozen roles in about a second; without a word until the banner, a
person cannot tell a slow start from a hung one, and with every role's log line the banner
scrolls away. `StartupProgress` shows one status line instead ("starting CoffeeBus: consumer
groups 4/10…") on stderr when stderr is a terminal, and a single "starting" line when it is
not (a pipe, a log file). Log records that appear meanwhile (warnings) are printed above the
status line: the console handler calls `clear` before and `redraw` after each record.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Final, TextIO

__all__ = ["StartupProgress", "process_age"]

#: Erase the current terminal line and return to its start.
_ERASE: Final = "\r\x1b[2K"


def process_age() -> float | None:
    """Seconds since this process was created (Linux: from /proc), else None."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            # Field 22, counted after the command name (which may hold spaces).
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as uptime:
            up = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, up - start_ticks / os.sysconf("SC_CLK_TCK"))


class StartupProgress:
    """The status line of a starting process (module docstring).

    Args:
        title: what starts, e.g. ``"CoffeeBus (embedded)"``.
        stream: where to write (stderr); a non-terminal gets one line, no updates.
        silent: write nothing (JSON logs: a log shipper reads stderr, not a person).
    """

    def __init__(self, title: str, stream: TextIO | None = None, *, silent: bool = False) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._silent = silent
        self._tty = self._stream.isatty() and not silent
        self._title = title
        self._text = ""
        self._shown = False
        # Count from the process's creation: the interpreter's start and the imports are part
        # of what a person waits for.
        self._started = time.perf_counter() - (process_age() or 0.0)
        if not self._tty and not silent:
            self._stream.write(f"Starting {title}…\n")
            self._stream.flush()

    @property
    def elapsed(self) -> float:
        """Seconds since the process was created (where known, else since this object)."""
        return time.perf_counter() - self._started

    def step(self, text: str) -> None:
        """Show what is starting now."""
        self._text = f"Starting {self._title}: {text}…"
        self.redraw()

    def clear(self) -> None:
        """Remove the status line (before other output goes to the terminal)."""
        if self._tty and self._shown:
            self._stream.write(_ERASE)
            self._stream.flush()
            self._shown = False

    def redraw(self) -> None:
        """Show the status line again (after other output)."""
        if self._tty and self._text:
            self._stream.write(_ERASE + self._text)
            self._stream.flush()
            self._shown = True

    def done(self) -> None:
        """Started: remove the status line for good."""
        self.clear()
        self._text = ""
