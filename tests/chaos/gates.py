"""Gate processes and the clients that move between them, for the fault tests that kill
gates (`test_gate_kill`, `test_deployed_system`, `test_room_gates`, `test_call_faults`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas.ids import UserId
from sdk.client import Client
from sdk.events import Reconnected
from tests.chaos.conftest import ChaosSystem
from tests.chaos.processes import LOAD_GATE, WAIT_S, RoleProcess, free_port, wait_listening

__all__ = ["GateProcess", "connect_across"]


class GateProcess:
    """A `coffeebus gateway` process of `system` on a free TCP port (the load tests' gate
    settings, `LOAD_GATE`, and `env` on top)."""

    def __init__(
        self, system: ChaosSystem, name: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.gate_id = f"{system.prefix}-{name}"
        self.process: RoleProcess = system.process(
            name,
            ["gateway", "--gate-id", self.gate_id],
            env_overrides={
                **(env or {}),
                "COFFEEBUS_GATEWAY__HOST": "127.0.0.1",
                "COFFEEBUS_GATEWAY__TCP_PORT": str(self.port),
                "COFFEEBUS_GATEWAY__WS_PORT": str(free_port()),
                **{f"COFFEEBUS_GATEWAY__{k.upper()}": str(v) for k, v in LOAD_GATE.items()},
            },
        )

    async def start(self) -> None:
        self.process.start()
        await wait_listening(self.port, within=WAIT_S)


async def connect_across(
    system: ChaosSystem, users: Sequence[UserId], gates: Sequence[GateProcess]
) -> tuple[dict[UserId, Client], dict[UserId, int]]:
    """Log each user in on the gates in turn (user i on gate i mod n), its client knowing
    the others and reconnecting with the SDK's backoff; the clients and how many times each
    reconnected so far (it counts on)."""
    reconnects: dict[UserId, int] = dict.fromkeys(users, 0)
    clients: dict[UserId, Client] = {}
    for n, user in enumerate(users):
        home = gates[n % len(gates)]
        others = [("127.0.0.1", g.port) for g in gates if g is not home]

        def count(event: object, user: UserId = user) -> None:
            if isinstance(event, Reconnected):
                reconnects[user] += 1

        client = Client(
            heartbeat_interval=None,
            request_timeout=5.0,
            reconnect=True,
            reconnect_min_delay=0.05,
            reconnect_max_delay=1.0,
            on_event=count,
        )
        system.clients.append(client)  # closed at teardown
        await client.connect("127.0.0.1", home.port, alternates=others)
        await client.login(user, system.tokens[user])
        clients[user] = client
    return clients, reconnects
