"""Fixtures of the `coffeebus` command tests: a private Kafka broker and isolated stores.

Commands such as `coffeebus run --services real` or `coffeebus consume msg` join the real
consumer groups on the declared ``im.*`` topics and answer every record they read — on the
shared broker they would answer other tests' clients. So these tests get a broker of their
own: `services/services.sh up kafka` with its own COFFEEBUS_HOME and ports, reusing the
jars `make services-up` cached. MongoDB and Redis stay the shared ones, isolated by a
unique database and key prefix that are removed at teardown.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from coffeebus.settings import Settings, load_settings
from tests.consumers.conftest import _cleanup as remove_stores

REPO = Path(__file__).resolve().parents[2]
SERVICES_SH = REPO / "services" / "services.sh"


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a single-node Kafka started for these tests alone."""
    home = tmp_path_factory.mktemp("kafka-home")
    cache = Path(os.environ.get("COFFEEBUS_HOME", Path.home() / ".cache" / "coffeebus"))
    (cache / "kafka").mkdir(parents=True, exist_ok=True)
    # The jars (copied by Maven once) are shared; run state and data are this broker's own.
    (home / "kafka").symlink_to(cache / "kafka", target_is_directory=True)
    port, controller = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env |= {
        "COFFEEBUS_HOME": str(home),
        "COFFEEBUS_KAFKA_PORT": str(port),
        "COFFEEBUS_KAFKA_CONTROLLER_PORT": str(controller),
    }

    def services(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SERVICES_SH), action, "kafka"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    started = services("up")
    if started.returncode != 0:
        services("down")
        pytest.fail(f"private Kafka did not start:\n{started.stdout}\n{started.stderr}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        services("down")


class Isolated:
    """Environment of a `coffeebus` process on the private broker and unique stores."""

    def __init__(self, kafka: str, redis_url: str, mongo_url: str) -> None:
        suffix = uuid.uuid4().hex[:12]
        self.database = f"cbcli_{suffix}"
        self.key_prefix = f"cbcli:{suffix}:"
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "MONGO_URL": mongo_url,
            "REDIS_URL": redis_url,
            "COFFEEBUS_MONGO__DATABASE": self.database,
            "COFFEEBUS_REDIS__KEY_PREFIX": self.key_prefix,
        }

    def settings(self) -> Settings:
        """The settings a process started with `env` reads."""
        return load_settings(env=self.env)

    async def cleanup(self) -> None:
        """Drop the database and the keys under the prefix."""
        await remove_stores(self.settings(), gate_topics=[])


@pytest.fixture
async def isolated(private_kafka: str, redis_url: str, mongo_url: str) -> AsyncIterator[Isolated]:
    """Settings (as environment) for a process on the private broker and unique stores."""
    target = Isolated(private_kafka, redis_url, mongo_url)
    try:
        yield target
    finally:
        await asyncio.shield(target.cleanup())
