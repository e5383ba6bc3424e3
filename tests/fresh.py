"""Run Python code in a fresh interpreter at the repository root: for what a test process,
which has imported half the project already, cannot show (what an import brings along)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["fresh_python"]

_ROOT = Path(__file__).resolve().parents[1]


def fresh_python(code: str) -> str:
    """What `code` prints, run by a new interpreter of this environment at the repo root."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=_ROOT,
    ).stdout
