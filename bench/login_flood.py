"""Login flood benchmark: does a flood of wrong-password logins on a gate slow down the
users already logged in on it? (issue 14; docs/security.md, "Logins", has the figures.)

    uv run python -m bench.login_flood [--seconds 15] [--flooders 200]
        [--services embedded|real] [--scenario botnet|address|all]   # make bench-login-flood

The system under test is ``coffeebus run --no-demo`` in a process of its own (gate, HTTP
API and every consumer group: in memory, or on the real services), at the default scrypt
cost and the default ``[login]`` settings unless a scenario says otherwise. This process
imports two users, A and B, logs both in on the gate and measures, for `--seconds` each:

1. **baseline**: A sends B a text every 50 ms (the c2c round trip: send → MsgDataAck, and
   send → B has the message pushed) and B sends a heartbeat every 50 ms;
2. **flood**: the same, while `--flooders` connections each send wrong-password logins
   (AuthReq) back to back, the next as soon as the previous is answered. Meanwhile a third
   user logs in with its right password every second, on a fresh connection: how long a
   legitimate password login takes during the flood. The flood comes from 127.0.0.1, the
   legitimate login from 127.0.0.2, the probe from 127.0.0.3.

Scenarios (the flood's shape):

- ``botnet``: every attempt names a new random user, and the gate's address throttle is
  off for loopback (the default ``[login] address_exempt``): no failed-login counter ever
  stops a guess, so every attempt costs a hash — the worst case for the password pool
  (one thread per core at a lower CPU priority, 16 checks queued, the rest RATE_LIMITED at
  once);
- ``address``: the same guesses, with loopback throttled like any address
  (``COFFEEBUS_LOGIN__ADDRESS_EXEMPT=[]``): after 30 failures the address backs off and
  its attempts are refused before any hash.

It prints a table and writes bench/results/login_flood.json: per scenario and phase the
percentiles of the three latencies, and the flood's answers by kind (a wrong-password
answer, RATE_LIMITED, none within 10 s) and rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from bench.stats import latency_ms
from schemas.commands import Cmd
from sdk.client import Client
from sdk.errors import LoginError, SdkError, ServerError
from sdk.events import Event, Push
from tests.chaos.services import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "login_flood.json"
PROBE_INTERVAL_S = 0.05
ANSWER_WITHIN_S = 10.0
USER_A, USER_B, USER_PW = 77_000_001, 77_000_002, 77_000_003


class Server:
    """``coffeebus run`` in a process of its own, on free ports."""

    def __init__(self, services: str, extra_env: dict[str, str]) -> None:
        self.tcp_port, self.ws_port, self.api_port = free_port(), free_port(), free_port()
        self.services = services
        self.env = {
            **os.environ,
            "COFFEEBUS_GATEWAY__HOST": "127.0.0.1",
            "COFFEEBUS_GATEWAY__TCP_PORT": str(self.tcp_port),
            "COFFEEBUS_GATEWAY__WS_PORT": str(self.ws_port),
            "COFFEEBUS_API__PORT": str(self.api_port),
            "COFFEEBUS_LOG__LEVEL": "WARNING",
            **extra_env,
        }
        if services == "real":
            suffix = secrets.token_hex(5)
            self.env["COFFEEBUS_MONGO__DATABASE"] = f"cbbench_flood_{suffix}"
            self.env["COFFEEBUS_REDIS__KEY_PREFIX"] = f"cbbench:flood{suffix}:"
            self.env["COFFEEBUS_GATEWAY__GATE_ID"] = f"flood-{suffix}"
        self.process: subprocess.Popen[bytes] | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Server]:
        args = [sys.executable, "-m", "coffeebus", "run", "--services", self.services, "--no-demo"]
        self.process = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            args, env=self.env, stdout=subprocess.DEVNULL
        )
        try:
            await self._ready()
            yield self
        finally:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def _ready(self) -> None:
        async with asyncio.timeout(180), httpx.AsyncClient() as http:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError("coffeebus run exited during start")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.api}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process so far."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _import_users(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.api, timeout=30) as http:
        for uid in (USER_A, USER_B):
            response = await http.put(f"/v1/users/{uid}", json={"token": f"flood-{uid}"})
            response.raise_for_status()
        response = await http.put(
            f"/v1/users/{USER_PW}", json={"user_name": "flood-victim", "password": "right-pw"}
        )
        response.raise_for_status()


class Probe:
    """A sends B a text every 50 ms, B heartbeats every 50 ms; latencies recorded."""

    def __init__(self) -> None:
        self.ack: list[float] = []
        self.delivered: list[float] = []
        self.heartbeat: list[float] = []
        self.lost = 0
        self._sent: dict[str, float] = {}
        self.a = Client(heartbeat_interval=None, reconnect=False)
        self.b = Client(heartbeat_interval=None, reconnect=False, on_event=self._pushed)

    def _pushed(self, event: Event) -> None:
        if isinstance(event, Push) and event.command_id == Cmd.MSG_DATA:
            sent = self._sent.pop(event.message.client_msg_id, None)  # type: ignore[union-attr]
            if sent is not None:
                self.delivered.append(time.monotonic() - sent)

    async def start(self, server: Server) -> None:
        for client, uid in ((self.a, USER_A), (self.b, USER_B)):
            await client.connect("127.0.0.1", server.tcp_port, local_addr=("127.0.0.3", 0))
            await client.login(uid, f"flood-{uid}")

    def reset(self) -> None:
        self.ack, self.delivered, self.heartbeat, self.lost = [], [], [], 0
        self._sent.clear()

    async def run(self, seconds: float) -> None:
        await asyncio.gather(self._texts(seconds), self._heartbeats(seconds))
        self.lost = len(self._sent)

    async def _texts(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            cmid = f"probe-{secrets.token_hex(6)}-{n}"
            start = time.monotonic()
            self._sent[cmid] = start
            await self.a.send_text(USER_B, "ping", client_msg_id=cmid)
            self.ack.append(time.monotonic() - start)
            await asyncio.sleep(PROBE_INTERVAL_S)  # the probe's pace
        await asyncio.sleep(1.0)  # the last pushes' way to B

    async def _heartbeats(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.heartbeat.append(await self.b.heartbeat(timeout=ANSWER_WITHIN_S))
            await asyncio.sleep(PROBE_INTERVAL_S)

    def figures(self) -> dict[str, Any]:
        return {
            "c2c_ack_ms": latency_ms(self.ack),
            "c2c_delivered_ms": latency_ms(self.delivered),
            "heartbeat_ms": latency_ms(self.heartbeat),
            "messages": len(self.ack),
            "not_delivered": self.lost,
        }

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()


async def _flooder(port: int, stop: asyncio.Event, answers: Counter[str]) -> None:
    client = Client(heartbeat_interval=None, reconnect=False, request_timeout=ANSWER_WITHIN_S)
    try:
        await client.connect("127.0.0.1", port)
        while not stop.is_set():
            name = f"guess-{secrets.token_hex(6)}"
            try:
                await client.login_password(name, "wrong")
            except LoginError:
                answers["wrong_password"] += 1
            except ServerError as exc:
                answers[f"error_{getattr(exc.code, 'name', exc.code)}".lower()] += 1
            except TimeoutError:
                answers["unanswered"] += 1
            else:
                answers["logged_in"] += 1
                return
    except (OSError, ConnectionError) as exc:
        answers[f"connection_{type(exc).__name__}"] += 1
    finally:
        await client.close()


def _flood_process(port: int, flooders: int, seconds: float, out: Connection) -> None:
    """The flood, in a process of its own: the probe's latencies must not include the time
    this process's own event loop spends on hundreds of flooding clients."""

    # The attacker's CPU is not the server's: on a machine the two share, the flood runs
    # at the lowest priority, so what the probe sees is the server's own doing.
    os.nice(19)

    async def run() -> dict[str, int]:
        answers: Counter[str] = Counter()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_flooder(port, stop, answers)) for _ in range(flooders)]
        await asyncio.sleep(seconds)  # the flood's duration
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return dict(answers)

    out.send(asyncio.run(run()))
    out.close()


async def _legit_logins(server: Server, stop: asyncio.Event, took: list[float]) -> None:
    """The victim logs in by password once a second, from another address than the flood
    (127.0.0.2), on a fresh connection; a RATE_LIMITED answer is retried after 100 ms, a
    dropped connection on a new one."""
    while not stop.is_set():
        start = time.monotonic()
        done = False
        while not done:
            client = Client(heartbeat_interval=None, reconnect=False, request_timeout=30)
            try:
                await client.connect("127.0.0.1", server.tcp_port, local_addr=("127.0.0.2", 0))
                while True:
                    try:
                        await client.login_password("flood-victim", "right-pw")
                        done = True
                        break
                    except ServerError:
                        await asyncio.sleep(0.1)  # the app's pause before it retries
            except (SdkError, OSError):
                pass  # the connection went (the login timeout): a new one
            finally:
                await client.close()
        took.append(time.monotonic() - start)
        await asyncio.sleep(1.0)  # the next login a second later


async def _scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    extra = {"COFFEEBUS_LOGIN__ADDRESS_EXEMPT": "[]"} if name == "address" else {}
    server = Server(args.services, extra)
    async with server.running():
        await _import_users(server)
        probe = Probe()
        await probe.start(server)
        try:
            await probe.run(2.0)  # warm up
            probe.reset()
            cpu0 = server.cpu_s()
            await probe.run(args.seconds)
            baseline = probe.figures() | {"server_cpu_s": round(server.cpu_s() - cpu0, 2)}
            probe.reset()
            legit: list[float] = []
            stop = asyncio.Event()
            receiver, sender = multiprocessing.Pipe(duplex=False)
            flood = multiprocessing.Process(
                target=_flood_process,
                args=(server.tcp_port, args.flooders, args.seconds + 2.0, sender),
                name="login-flood",
            )
            flood.start()
            await asyncio.sleep(2.0)  # the flooders connect and reach their pace
            victim = asyncio.create_task(_legit_logins(server, stop, legit))
            cpu0 = server.cpu_s()
            started = time.monotonic()
            await probe.run(args.seconds)
            stop.set()
            await victim
            answers: dict[str, int] = await asyncio.to_thread(receiver.recv)
            elapsed = time.monotonic() - started + 2.0
            await asyncio.to_thread(flood.join)
            flooded = probe.figures() | {
                "server_cpu_s": round(server.cpu_s() - cpu0, 2),
                "flood_answers": answers,
                "flood_attempts_per_s": round(sum(answers.values()) / elapsed, 1),
                "legit_password_login_ms": latency_ms(legit),
                "legit_password_logins": len(legit),
            }
        finally:
            await probe.close()
    return {"baseline": baseline, "flood": flooded}


def _row(label: str, figures: dict[str, Any]) -> str:
    def cell(key: str) -> str:
        lat = figures[key]
        return f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f}"

    return (
        f"| {label} | {cell('c2c_ack_ms')} | {cell('c2c_delivered_ms')} | "
        f"{cell('heartbeat_ms')} | {figures['messages']} ({figures['not_delivered']} lost) |"
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    scenarios = ["botnet", "address"] if args.scenario == "all" else [args.scenario]
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
            "host": platform.node(),
        },
        "services": args.services,
        "seconds": args.seconds,
        "flooders": args.flooders,
        "scenarios": {},
    }
    for name in scenarios:
        print(f"login_flood: scenario {name} ({args.services}), {args.seconds:g} s a phase …")
        result["scenarios"][name] = await _scenario(name, args)
    result["machine"]["load_after"] = os.getloadavg()
    print("| scenario, phase | c2c ack ms p50/p99/max | c2c delivered ms | heartbeat ms | texts |")
    print("|---|---|---|---|---|")
    for name, phases in result["scenarios"].items():
        for phase, figures in phases.items():
            print(_row(f"{name}, {phase}", figures))
        flood = phases["flood"]
        print(
            f"  {name}: flood {flood['flood_attempts_per_s']}/s {flood['flood_answers']}; "
            f"legit password login ms {flood['legit_password_login_ms']} "
            f"({flood['legit_password_logins']}); server CPU s {flood['server_cpu_s']}"
        )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.login_flood", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="each phase (default 15)")
    parser.add_argument("--flooders", type=int, default=200, help="flooding connections")
    parser.add_argument("--services", choices=("embedded", "real"), default="embedded")
    parser.add_argument("--scenario", choices=("botnet", "address", "all"), default="all")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
