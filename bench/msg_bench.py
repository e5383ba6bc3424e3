"""Message path throughput and latency: SDK clients → gate → msg → fanout → gate → SDK.

Everything runs in this one process (a gate, one member each of the msg and fanout groups,
the SDK clients), on the embedded wiring or on the real services::

    uv run python -m bench.msg_bench --services embedded
    uv run python -m bench.msg_bench --services real --pairs 50 --messages 40

c2c: `--pairs` senders each send `--messages` messages to their own receiver, `--window` in
flight per sender; reported: acked messages/s (first send → last ack) and the send→deliver
latency of every message (the send time travels in msg_data, the receiver's push callback
takes the difference) as p50/p99.

group: one group of `--group-size` members, half of them online, one sender sends
`--group-messages` messages; reported: pushes received per second and inbox entries written
per second (first send → the last member's inbox complete).

On the real services a fresh Mongo database, Redis namespace and consumer group ids are used
and removed afterwards (the Kafka topics are the shared ones of topology.yaml).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import struct
import time
import uuid
from collections.abc import Callable

from bench import _server
from coffeebus.wiring import Runtime
from gateway.server import Gate
from schemas.codes import SessionType
from schemas.ids import UserId
from schemas.pb.coffeechat import message_pb2
from sdk.client import Client
from sdk.events import Event, Push
from store.groups import GroupSpec
from store.users import UserImport

log = logging.getLogger("msg_bench")


def system(services: str) -> contextlib.AbstractAsyncContextManager[tuple[Runtime, Gate]]:
    """The gate and one member each of the msg and fanout groups (`bench._server.system`)."""
    return _server.system(services, groups=("msg", "fanout"))


async def users(rt: Runtime, count: int) -> list[UserId]:
    ids = [UserId(int.from_bytes(os.urandom(6), "big") | 1 << 40) for _ in range(count)]
    for uid in ids:
        await rt.users.upsert(UserImport(user_id=uid, nick_name=f"b{uid}", token=f"t{uid}"))
    return ids


async def login(gate: Gate, uid: UserId, on_event: Callable[[Event], None] | None = None) -> Client:
    client = Client(
        heartbeat_interval=None,
        reconnect=False,
        event_queue_size=0,
        on_event=on_event,
        request_timeout=60,
    )
    await client.connect("127.0.0.1", gate.tcp_port)
    await client.login(uid, f"t{uid}")
    return client


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def c2c(rt: Runtime, gate: Gate, pairs: int, messages: int, window: int) -> dict[str, float]:
    ids = await users(rt, 2 * pairs)
    latencies: list[float] = []
    done = asyncio.Event()
    total = pairs * messages

    def on_push(event: Event) -> None:
        if isinstance(event, Push) and isinstance(event.message, message_pb2.MsgData):
            (sent,) = struct.unpack_from(">d", event.message.msg_data)
            latencies.append(time.perf_counter() - sent)
            if len(latencies) >= total:
                done.set()

    senders = [await login(gate, ids[i]) for i in range(pairs)]
    receivers = [await login(gate, ids[pairs + i], on_push) for i in range(pairs)]

    async def send_all(client: Client, peer: UserId) -> None:
        slots = asyncio.Semaphore(window)

        async def one(n: int) -> None:
            async with slots:
                msg = message_pb2.MsgData(
                    to_session_id=peer,
                    client_msg_id=str(uuid.uuid4()),
                    session_type=SessionType.SINGLE,  # type: ignore[arg-type]
                    msg_data=struct.pack(">d", time.perf_counter()) + b"x" * 40,
                )
                await client.send_message(msg)

        await asyncio.gather(*(one(n) for n in range(messages)))

    start = time.perf_counter()
    await asyncio.gather(*(send_all(s, ids[pairs + i]) for i, s in enumerate(senders)))
    acked = time.perf_counter() - start
    await asyncio.wait_for(done.wait(), 120)
    delivered = time.perf_counter() - start
    for client in senders + receivers:
        await client.close()
    ms = sorted(x * 1000 for x in latencies)
    return {
        "messages": total,
        "acked_per_s": round(total / acked),
        "delivered_per_s": round(total / delivered),
        "latency_p50_ms": round(pct(ms, 50), 1),
        "latency_p99_ms": round(pct(ms, 99), 1),
    }


async def group(rt: Runtime, gate: Gate, size: int, messages: int) -> dict[str, float]:
    ids = await users(rt, size)
    owner, members = ids[0], ids[1:]
    created = await rt.groups.create(
        GroupSpec(name="bench", owner_id=owner, group_type=2), members, create_key=uuid.uuid4().hex
    )
    group_id = created.group.group_id
    online = ids[1 : size // 2 + 1]
    received = 0
    done = asyncio.Event()
    expected = len(online) * messages

    def on_push(event: Event) -> None:
        nonlocal received
        if isinstance(event, Push) and event.command_id == 0x0301:
            received += 1
            if received >= expected:
                done.set()

    clients = [await login(gate, uid, on_push) for uid in online]
    sender = await login(gate, owner)
    last_offline = ids[-1]
    start = time.perf_counter()
    for n in range(messages):
        await sender.send_text(group_id, f"g{n}", session_type=SessionType.GROUP)
    await asyncio.wait_for(done.wait(), 300)
    delivered = time.perf_counter() - start
    while len((await rt.inbox.after(last_offline, 0, messages + 1)).entries) < messages:  # noqa: ASYNC110 - a store has no event to await
        await asyncio.sleep(0.01)
    written = time.perf_counter() - start
    for client in [*clients, sender]:
        await client.close()
    return {
        "members": size,
        "online": len(online),
        "messages": messages,
        "deliveries_per_s": round(expected / delivered),
        "inbox_writes_per_s": round(size * messages / written),
    }


async def main(args: argparse.Namespace) -> None:
    results: dict[str, object] = {"services": args.services}
    async with system(args.services) as (rt, gate):
        results["c2c"] = await c2c(rt, gate, args.pairs, args.messages, args.window)
        print(json.dumps(results["c2c"]), flush=True)
        results["group"] = await group(rt, gate, args.group_size, args.group_messages)
        print(json.dumps(results["group"]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", choices=("embedded", "real"), default="embedded")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=1000)
    parser.add_argument("--group-messages", type=int, default=20)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
