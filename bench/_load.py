"""A load-generator process for `make bench`: SDK clients driven over a pipe.

The driver starts several of these (one core of Python cannot load a gate on its own), each
with its share of the users. A worker logs its users in over TCP, each connection bound to
one of several 127.0.0.x source addresses, then runs what the driver asks, one request at a
time — ``(command, *args)`` answered by one value:

- ``("login", user_ids)``: connect and log in (no heartbeat task, no reconnect; receivers
  ack every push, as a real client does).
- ``("c2c", pairs, rate, duration_s, drain_s)``: an open-loop send of `rate` messages/s
  for `duration_s`, round-robin over the ``(sender, receiver)`` pairs. Message *i* is due at
  ``t0 + i / rate``; every latency is measured from that due time (so a late generator is
  charged, not hidden: no coordinated omission), and the due time travels in ``msg_data``
  so the receiver — possibly in another worker — measures send→deliver. Waits up to
  `drain_s` after the last send for acks; returns counts and the send→ack latencies.
- ``("deliveries",)``: the send→deliver latencies (and group arrival times) recorded since
  the last call, then forgets them.
- ``("send_to", senders, receiver, count)``: each of `senders` sends `count` messages to
  `receiver`, one after another (the next once the previous is acked), all senders at once;
  returns counts, the send→ack latencies and when the first send started and the last ack
  came (the pull scenario's history, sent the way production messages are).
- ``("sessions", user_id)``: one session-list request: its latency, how many sessions it
  listed and their unread counts' total.
- ``("pull", user_id, peers, rounds)``: `rounds` session-list requests and as many history
  pages (20 messages, a random conversation of `peers`), one at a time; their latencies.
- ``("close",)``: close every client and exit.

``time.perf_counter`` is CLOCK_MONOTONIC on Linux, one clock for every process on the
machine, so times taken in different processes compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import struct
import time
import uuid
from collections import defaultdict
from multiprocessing.connection import Connection
from typing import Any

from bench._server import token
from schemas.codes import SessionType
from schemas.pb.coffeechat import message_pb2
from sdk.client import Client
from sdk.errors import SdkError
from sdk.events import Event, Push

log = logging.getLogger(__name__)

#: msg_data of a bench message: the due time (perf_counter seconds) and a message index.
STAMP = struct.Struct(">dI")
PAD = b"x" * 40
MSG_DATA_CMD = 0x0301
LOGIN_CONCURRENCY = 100


class Worker:
    """The clients of one load process and what they measured."""

    def __init__(self, port: int, sources: tuple[str, ...]) -> None:
        self.port = port
        self.sources = sources
        self.clients: dict[int, Client] = {}
        #: send→deliver latencies (seconds) of c2c pushes since the last `deliveries`.
        self.delivered: list[float] = []
        #: group message index → arrival times at this worker's members.
        self.arrivals: defaultdict[int, list[float]] = defaultdict(list)

    def on_event(self, user_id: int, event: Event) -> None:
        if not (isinstance(event, Push) and event.command_id == MSG_DATA_CMD):
            return
        now = time.perf_counter()
        msg = event.message
        if (
            not isinstance(msg, message_pb2.MsgData)
            or len(msg.msg_data) < STAMP.size
            or msg.from_user_id == user_id  # a sender's copy of its own group message
        ):
            return
        due, index = STAMP.unpack_from(msg.msg_data)
        if int(msg.session_type) == SessionType.GROUP:
            self.arrivals[index].append(now)
        else:
            self.delivered.append(now - due)

    async def login(self, user_ids: list[int]) -> int:
        slots = asyncio.Semaphore(LOGIN_CONCURRENCY)

        async def one(n: int, uid: int) -> None:
            client = Client(
                heartbeat_interval=None,
                reconnect=False,
                event_queue_size=0,
                on_event=functools.partial(self.on_event, uid),
                request_timeout=120,
                connect_timeout=60,
            )
            async with slots:
                await client.connect(
                    "127.0.0.1",
                    self.port,
                    local_addr=(self.sources[n % len(self.sources)], 0),
                )
                await client.login(uid, token(uid))
            self.clients[uid] = client

        await asyncio.gather(*(one(n, uid) for n, uid in enumerate(user_ids)))
        return len(self.clients)

    async def c2c(
        self, pairs: list[tuple[int, int]], rate: float, duration_s: float, drain_s: float
    ) -> dict[str, Any]:
        total = max(1, round(rate * duration_s))
        acks: list[float] = []
        failed = 0
        pending: set[asyncio.Task[None]] = set()

        async def send(sender: Client, peer: int, due: float, index: int) -> None:
            nonlocal failed
            msg = message_pb2.MsgData(
                from_user_id=sender.user_id,
                to_session_id=peer,
                client_msg_id=str(uuid.uuid4()),
                session_type=SessionType.SINGLE,  # type: ignore[arg-type]
                msg_type=1,  # type: ignore[arg-type]
                msg_data=STAMP.pack(due, index) + PAD,
            )
            try:
                await sender.send_message(msg)
            except (SdkError, TimeoutError, OSError):
                failed += 1
                return
            acks.append(time.perf_counter() - due)

        t0 = time.perf_counter() + 0.05
        sent = 0
        while sent < total:
            now = time.perf_counter()
            # Everything due by now goes out in this wake-up: the loop's sleep granularity
            # (~1 ms) must not cap the rate.
            due_count = min(total, int((now - t0) * rate) + 1)
            while sent < due_count:
                sender_id, peer = pairs[sent % len(pairs)]
                task = asyncio.create_task(
                    send(self.clients[sender_id], peer, t0 + sent / rate, sent)
                )
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            if sent < total:
                await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
        send_end = time.perf_counter()
        if pending:
            await asyncio.wait(pending, timeout=drain_s)
        unfinished = len(pending)
        for task in list(pending):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)
        return {
            "sent": sent,
            "send_s": send_end - t0,
            "acked": len(acks),
            "failed": failed,
            "unacked": unfinished,
            "ack_latencies": acks,
        }

    async def group_send(self, sender_id: int, group_id: int, messages: int) -> dict[str, Any]:
        """Send `messages` messages into a group at once (one sender, all in flight);
        returns their due times and the send→ack latencies."""
        sender = self.clients[sender_id]
        dues = [0.0] * messages

        async def send(index: int) -> float:
            due = time.perf_counter()
            dues[index] = due
            msg = message_pb2.MsgData(
                from_user_id=sender_id,
                to_session_id=group_id,
                client_msg_id=str(uuid.uuid4()),
                session_type=SessionType.GROUP,  # type: ignore[arg-type]
                msg_type=1,  # type: ignore[arg-type]
                msg_data=STAMP.pack(due, index) + PAD,
            )
            await sender.send_message(msg)
            return time.perf_counter() - due

        acks = await asyncio.gather(*(send(i) for i in range(messages)))
        return {"dues": dues, "ack_latencies": list(acks)}

    async def send_to(self, senders: list[int], receiver: int, count: int) -> dict[str, Any]:
        """Every sender sends `count` messages to `receiver`, each once the previous one is
        acked; the senders all at once."""
        acks: list[float] = []
        failed = 0
        errors: list[str] = []

        async def one_sender(sender_id: int) -> None:
            nonlocal failed
            sender = self.clients[sender_id]
            for index in range(count):
                due = time.perf_counter()
                msg = message_pb2.MsgData(
                    from_user_id=sender_id,
                    to_session_id=receiver,
                    client_msg_id=str(uuid.uuid4()),
                    session_type=SessionType.SINGLE,  # type: ignore[arg-type]
                    msg_type=1,  # type: ignore[arg-type]
                    msg_data=STAMP.pack(due, index) + PAD,
                )
                try:
                    await sender.send_message(msg)
                except (SdkError, TimeoutError, OSError) as exc:
                    failed += 1
                    if len(errors) < 3:
                        errors.append(repr(exc))
                    continue
                acks.append(time.perf_counter() - due)

        started = time.perf_counter()
        await asyncio.gather(*(one_sender(s) for s in senders))
        return {
            "sent": len(senders) * count,
            "acked": len(acks),
            "failed": failed,
            "errors": errors,
            "started": started,
            "ended": time.perf_counter(),
            "ack_latencies": acks,
        }

    async def sessions(self, user_id: int) -> dict[str, Any]:
        """One session list: its latency, the sessions it listed and their unread total."""
        started = time.perf_counter()
        listed = await self.clients[user_id].recent_sessions()
        seconds = time.perf_counter() - started
        return {
            "seconds": seconds,
            "sessions": len(listed.contact_session_list),
            "unread": sum(s.unread_cnt for s in listed.contact_session_list),
        }

    def deliveries(self) -> dict[str, Any]:
        delivered, arrivals = self.delivered, dict(self.arrivals)
        self.delivered, self.arrivals = [], defaultdict(list)
        return {"latencies": delivered, "arrivals": arrivals}

    async def pull(self, user_id: int, peers: list[int], rounds: int) -> dict[str, list[float]]:
        client = self.clients[user_id]
        sessions, history = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            await client.recent_sessions()
            sessions.append(time.perf_counter() - started)
            started = time.perf_counter()
            await client.history(random.choice(peers), limit=20)
            history.append(time.perf_counter() - started)
        return {"sessions": sessions, "history": history}

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)
        self.clients.clear()


async def _work(conn: Connection, port: int, sources: tuple[str, ...]) -> None:
    worker = Worker(port, sources)
    close_id = 0
    conn.send((0, ("ready",)))
    try:
        while True:
            request = await asyncio.to_thread(conn.recv)
            request_id, name, args = request[0], request[1], request[2:]
            if name == "close":
                close_id = request_id
                break
            try:
                result = getattr(worker, name)(*args)
                if asyncio.iscoroutine(result):
                    result = await result
                conn.send((request_id, result))
            except Exception as exc:  # the driver reports it and stops the run
                log.exception("bench load worker: %s failed", name)
                conn.send((request_id, ("error", f"{name}: {exc!r}")))
    finally:
        await worker.close()
    conn.send((close_id, ("closed",)))


def work(conn: Connection, port: int, sources: tuple[str, ...]) -> None:
    """Process entry point."""
    import uvloop  # noqa: PLC0415 - the fastest client loop makes the load generator last

    from bench._conn_load import raise_nofile  # noqa: PLC0415

    logging.basicConfig(level=logging.WARNING)
    raise_nofile()
    uvloop.run(_work(conn, port, sources))
