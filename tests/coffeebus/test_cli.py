"""The `coffeebus` command, run as a user runs it: a separate process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bus.topology import load_topology

REPO = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).parent / "coffeebus"


def coffeebus(
    *args: str, bootstrap: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFEEBUS_TOPOLOGY")}
    if bootstrap is not None:
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    return subprocess.run(
        [sys.executable, "-m", "coffeebus", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["CoffeeBus", "Kafka", "topology", "--verbose", "KAFKA_BOOTSTRAP_SERVERS"]),
        (["topology"], ["apply", "show", "lag"]),
        (
            ["topology", "apply"],
            ["--bootstrap", "--file", "--overlay", "--timeout", "--json", "exit codes"],
        ),
        (["topology", "show"], ["--check", "UNDECLARED", "3  Kafka unreachable"]),
        (["topology", "lag"], ["--group", "--partitions", "--json", "laggiest", "COMMITTED"]),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    result = coffeebus(*args, "--help")
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout
    assert result.stderr == ""


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: coffeebus")


def test_no_command_is_a_usage_error() -> None:
    result = coffeebus()
    assert result.returncode == 2
    assert "required: COMMAND" in result.stderr


def test_bad_timeout_is_a_usage_error() -> None:
    result = coffeebus("topology", "show", "--timeout", "0")
    assert result.returncode == 2
    assert "--timeout: must be > 0" in result.stderr


def test_bad_topology_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text("version: 1\ntopics:\n  t:\n    partitions: many\n", encoding="utf-8")
    # The file is checked before any connection: no broker needed.
    result = coffeebus("topology", "apply", "--file", str(path), bootstrap="127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"coffeebus: error: {path}:4: topics.t.partitions: expected `int`, got `str`"
    ]
    assert "Traceback" not in result.stderr


def test_unreachable_broker_exits_3_quickly() -> None:
    started = time.monotonic()
    result = coffeebus("topology", "show", "--timeout", "2", bootstrap="127.0.0.1:1")
    elapsed = time.monotonic() - started
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        "coffeebus: error: Kafka is not reachable at 127.0.0.1:1: no broker accepted a connection"
    ]
    assert result.stdout == ""
    assert elapsed < 10


@pytest.mark.kafka
def test_apply_creates_every_declared_topic_and_show_finds_no_drift(
    kafka_bootstrap: str,
) -> None:
    topology = load_topology()
    applied = coffeebus("topology", "apply", "--json", bootstrap=kafka_bootstrap)
    assert applied.returncode == 0, applied.stderr
    actions = json.loads(applied.stdout)
    assert all(a["kind"] != "cannot-fix" for a in actions)

    shown = coffeebus("topology", "show", "--json", "--check", bootstrap=kafka_bootstrap)
    report = json.loads(shown.stdout)
    rows = {row["topic"]: row for row in report["rows"]}
    assert {name: rows[name]["status"] for name in topology.topics} == dict.fromkeys(
        topology.topics, "ok"
    )
    # Anything else in im.* / biz.* is a name the file does not declare: drift, exit 1.
    undeclared = [row["topic"] for row in report["rows"] if row["status"] == "undeclared"]
    assert shown.returncode == (1 if undeclared else 0), undeclared
    assert report["drift"] == bool(undeclared)

    again = coffeebus("topology", "apply", bootstrap=kafka_bootstrap)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "nothing to do: the cluster matches the topology\n"


@pytest.mark.kafka
def test_show_and_lag_print_tables(kafka_bootstrap: str) -> None:
    applied = coffeebus("topology", "apply", bootstrap=kafka_bootstrap)
    assert applied.returncode == 0, applied.stderr

    shown = coffeebus("topology", "show", bootstrap=kafka_bootstrap)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "TOPIC", "PARTITIONS", "RF", "CONFIG", "DRIFT"]
    assert any(line.split()[:3] == ["ok", "im.up.msg", "16"] for line in lines)
    declared = len(load_topology().topics)
    assert f"{declared} declared topics: {declared} ok, 0 drift, 0 missing" in lines[-1]

    # Exact lag numbers: tests/coffeebus/test_topology_lag.py, on a topology of its own.
    result = coffeebus(
        "topology", "lag", "--group", "push", "--partitions", bootstrap=kafka_bootstrap
    )
    assert result.returncode == 0, result.stderr
    summary, totals, detail = result.stdout.rstrip("\n").split("\n\n")
    partitions = load_topology().topic("im.push").partitions
    assert [row.split()[:3] for row in summary.splitlines()[1:]] == [
        ["push", "im.push", str(partitions)]
    ]
    assert totals.startswith("total lag ")
    header, *rows = detail.splitlines()
    assert header.split() == ["GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "OWNER"]
    assert [row.split()[:3] for row in rows] == [
        ["push", "im.push", str(p)] for p in range(partitions)
    ]


@pytest.mark.kafka
def test_lag_of_undeclared_group_is_a_usage_error(kafka_bootstrap: str) -> None:
    result = coffeebus("topology", "lag", "--group", "nope", bootstrap=kafka_bootstrap)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"coffeebus: error: consumer group 'nope' is not declared in {REPO / 'topology.yaml'}"
    )


def test_help_names_every_consumer_group_and_says_what_verbose_does() -> None:
    declared = set(load_topology().groups)
    for args in ([], ["run"]):
        text = " ".join(coffeebus(*args, "--help").stdout.split())  # argparse wraps lines
        listed = re.search(r"consumer groups? \(([^)]*)\)", text)
        assert listed is not None, text
        assert set(listed[1].split(", ")) == declared, args
    # Roles log INFO by default: -v must mean more than that.
    assert "-v for info" not in text
    assert "so -v is DEBUG" in " ".join(coffeebus("--help").stdout.split())
