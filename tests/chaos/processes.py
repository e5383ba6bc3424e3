"""Role processes of a fault test: `coffeebus consume …` / `coffeebus gateway` subprocesses on
a test's settings, killed with SIGKILL and started again.

    env = role_env(system.runtime.settings, topology_file)
    msg = RoleProcess("msg", ["consume", "msg", "--static-member-id", "k1"], env, tmp_path)
    msg.start()
    await wait_serving(system, bootstrap, ["msg"])
    msg.kill()          # SIGKILL: no drain, no commit, no leave-group
    msg.start()         # the same static member id gets its partitions back at once
    ...
    msg.stop()          # SIGTERM (graceful), SIGKILL if it does not end in time

Every start writes the process's stderr to its own file (``<name>-<n>.log``); `tracebacks()`
finds the unexpected ones across them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from bus.admin import AdminError, lag
from bus.topology import Topology, default_topology_path
from coffeebus.settings import Settings
from tests.chaos.services import free_port
from tests.waiting import wait_for

__all__ = [
    "GIVE_UP_S",
    "ROLE_TEST_MARKS",
    "WAIT_S",
    "RoleProcess",
    "free_port",
    "role_env",
    "role_test_marks",
    "wait_listening",
    "wait_serving",
    "write_topology",
]

STOP_WITHIN_S = 30.0


#: Marks of a fault test with role processes: real services, `make chaos`, and a bound above
#: the default 120 s — the session's private broker starts first (~35 s on a busy 2-core
#: machine, more when it is loaded) and every role process takes seconds to start.
def role_test_marks(timeout_s: float) -> list[pytest.MarkDecorator]:
    """`ROLE_TEST_MARKS` with another bound (a test that starts more than one broker)."""
    return [
        pytest.mark.kafka,
        pytest.mark.redis,
        pytest.mark.mongo,
        pytest.mark.chaos,
        pytest.mark.timeout(timeout_s),
    ]


ROLE_TEST_MARKS = role_test_marks(600)
#: A restarted role process needs ~15 s to import on an idle 2-core machine and up to a minute
#: when the machine is loaded, then replays what its predecessor left uncommitted, resends
#: included: a send may wait that long for its ack (GIVE_UP_S), a load that long for
#: progress (WAIT_S).
GIVE_UP_S = 300.0
#: Gate settings for the load tests' gates. The default per-connection limit (50 frames/s,
#: burst 100) is sized for a person typing; here one client receives several streams at
#: once and acks every message it is pushed (~100 frames/s in the consumer-kill test), so
#: the default closed it (RATE_LIMITED) mid-run. The limit itself is tested in tests/security.
LOAD_GATE: dict[str, float] = {"rate_limit_per_s": 2_000.0, "rate_limit_burst": 4_000}
WAIT_S = 240.0


def write_topology(path: Path, suffix: str) -> Path:
    """topology.yaml with ``.<suffix>`` added to every consumer group id (topics unchanged),
    for a test's processes, which read their topology from a file (COFFEEBUS_TOPOLOGY)."""
    text = default_topology_path().read_text()
    path.write_text(re.sub(r"group_id: (\S+)", rf"group_id: \1.{suffix}", text))
    return path


def role_env(
    settings: Settings, topology_file: Path, *, log_level: str = "WARNING"
) -> dict[str, str]:
    """The environment of a role process on the same services, database and Redis namespace
    as `settings`, with the topology of `topology_file`."""
    return {
        **os.environ,
        "COFFEEBUS_TOPOLOGY": str(topology_file),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MONGO_URL": settings.mongo.url,
        "REDIS_URL": settings.redis.url,
        "COFFEEBUS_MONGO__DATABASE": settings.mongo.database,
        "COFFEEBUS_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "COFFEEBUS_LOG__LEVEL": log_level,
    }


class RoleProcess:
    """One `coffeebus ARGS…` process, started again after each kill (module docstring)."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], logs: Path) -> None:
        self.name = name
        self.args = list(args)
        self.env = dict(env)
        self.logs = logs
        self.starts = 0
        self.kills = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the running process, or None."""
        p = self._process
        return p.pid if p is not None and p.poll() is None else None

    def start(self) -> None:
        """Start the process (it must not be running)."""
        if self.pid is not None:
            raise RuntimeError(f"{self.name} is running")
        self.starts += 1
        log_file = self.logs / f"{self.name}-{self.starts}.log"
        with log_file.open("wb") as out:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                [sys.executable, "-m", "coffeebus", *self.args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )

    def kill(self) -> None:
        """SIGKILL and reap (returns at once: the kernel ends a killed process promptly)."""
        process = self._process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{self.name} is not running")
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.kills += 1

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not ended within `STOP_WITHIN_S`; the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def tracebacks(self) -> list[str]:
        """The stderr of every start that holds a Python traceback."""
        found = []
        for n in range(1, self.starts + 1):
            text = (self.logs / f"{self.name}-{n}.log").read_text(errors="replace")
            if "Traceback" in text:
                found.append(f"--- {self.name}-{n}.log\n{text[-3000:]}")
        return found


async def wait_serving(
    topology: Topology,
    bootstrap: str,
    groups: Sequence[str],
    *,
    members: int | None = None,
    within: float = 60.0,
) -> None:
    """Wait until every partition of each group's topics is assigned to a live member (and
    the group has exactly `members` members, if given): the processes consume."""

    async def serving() -> bool:
        try:
            rows = await lag(topology, bootstrap, groups)
        except (AdminError, KafkaError):  # a new broker electing its coordinator, a rebalance
            return False
        for row in rows:
            if row.state != "Stable" or any(p.owner is None for p in row.partitions):
                return False
            if members is not None and row.members != members:
                return False
        return True

    await wait_for(serving, within=within)


async def wait_listening(port: int, *, within: float = 60.0) -> None:
    """Wait until something accepts TCP connections on loopback `port`."""

    def accepting() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return True
        except OSError:
            return False

    await wait_for(accepting, within=within)
