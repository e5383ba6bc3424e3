"""The metrics and health listener of a role process, as an operator runs and reads it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.coffeebus.conftest import REPO


@pytest.mark.parametrize("command", [["gateway"], ["api"], ["consume"], ["run"]])
def test_help_of_every_role_command_explains_the_listener(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coffeebus", *command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = " ".join(result.stdout.split())
    for needle in (
        "log, observability;",
        "[observability] metrics_port (COFFEEBUS_OBSERVABILITY__METRICS_PORT)",
        "metrics_host (COFFEEBUS_OBSERVABILITY__METRICS_HOST, default 127.0.0.1;",
        "/metrics (Prometheus), /healthz and /readyz",
        "Port 0, the default, runs no listener",
        "docs/observability.md",
    ):
        assert needle in text, needle
