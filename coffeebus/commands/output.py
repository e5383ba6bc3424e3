"""Plain-text tables for human output, and JSON for `--json`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["print_json", "table"]


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, numeric: set[int] | None = None
) -> str:
    """Columns padded to their widest cell; columns in `numeric` are right-aligned.

    None renders as "-". The last column is not padded, so long details do not leave
    trailing blanks.
    """
    numeric = numeric or set()
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if i in numeric else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in cells)])


def print_json(value: Any) -> None:
    """`value` (structs, dicts, lists) as indented JSON on stdout."""
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")
