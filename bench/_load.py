"""A load-generator process for `make bench`: SDK clients driven over a pipe.

The driver starts several of these (one core of Python cannot load a gate on its own), each
with its share of the users. A worker logs its users in over TCP, each connection bound to
one of several 127.0.0.x source addresses, then runs what the driver asks, one request at a
time — ``(command, *args)`` answered by one value:

- ``("login", user_ids, lean)``: connect and log in; receivers ack every push, as a real
  client does. With `lean` (the c2c and group scenarios) each user is a `bench._lean`
  connection, which costs the load side a fraction of an SDK client's CPU; otherwise an SDK
  client (no heartbeat task, no reconnect), which the pull scenario's requests need.
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

from bench._lean import LeanClient, Sink
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
#: The shortest wait between two wake-ups of the c2c generator: the loop's timers have a
#: millisecond's granularity, and a shorter sleep spins (every wake-up sends all that is due,
#: and every latency counts from the message's own due time).
MIN_SLEEP_S = 0.001
#: How long a group send waits for the server's acks of its messages.
GROUP_SEND_TIMEOUT_S = 600.0


class Worker:
    """The clients of one load process and what they measured."""

    def __init__(self, port: int, sources: tuple[str, ...]) -> None:
        self.port = port
        self.sources = sources
        self.clients: dict[int, Client] = {}
        self.lean: dict[int, LeanClient] = {}
        self.sink = Sink(self.on_message)
        #: makes this worker's client_msg_ids unique (a uuid per message costs the load side).
        self._tag = uuid.uuid4().hex[:12]
        self._counter = 0
        #: send→deliver latencies (seconds) of c2c pushes since the last `deliveries`.
        self.delivered: list[float] = []
        #: group message index → arrival times at this worker's members.
        self.arrivals: defaultdict[int, list[float]] = defaultdict(list)

    def on_event(self, user_id: int, event: Event) -> None:
        if not (isinstance(event, Push) and event.command_id == MSG_DATA_CMD):
            return
        if isinstance(event.message, message_pb2.MsgData):
            self.on_message(user_id, event.message, time.perf_counter())

    def on_message(self, user_id: int, msg: message_pb2.MsgData, now: float) -> None:
        """A MsgData pushed to `user_id` arrived at `now`: a c2c latency or a group arrival."""
        if (
            len(msg.msg_data) < STAMP.size
            or msg.from_user_id == user_id  # a sender's copy of its own group message
        ):
            return
        due, index = STAMP.unpack_from(msg.msg_data)
        if int(msg.session_type) == SessionType.GROUP:
            self.arrivals[index].append(now)
        else:
            self.delivered.append(now - due)

    def message(
        self, sender: int, to: int, kind: SessionType, due: float, index: int
    ) -> message_pb2.MsgData:
        """A bench message: the due time and index in ``msg_data``, a fresh client_msg_id."""
        self._counter += 1
        return message_pb2.MsgData(
            from_user_id=sender,
            to_session_id=to,
            client_msg_id=f"{self._tag}-{self._counter}",
            session_type=kind,  # type: ignore[arg-type]
            msg_type=1,  # type: ignore[arg-type]
            msg_data=STAMP.pack(due, index) + PAD,
        )

    async def login(self, user_ids: list[int], lean: bool = False) -> int:
        slots = asyncio.Semaphore(LOGIN_CONCURRENCY)

        async def one_lean(n: int, uid: int) -> None:
            client = LeanClient(uid, self.sink)
            async with slots:
                await client.connect(
                    "127.0.0.1", self.port, token(uid), source=self.sources[n % len(self.sources)]
                )
            self.lean[uid] = client

        if lean:
            await asyncio.gather(*(one_lean(n, uid) for n, uid in enumerate(user_ids)))
            return len(self.lean)

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
        sink = self._fresh_sink()
        t0 = time.perf_counter() + 0.05
        sent = 0
        while sent < total:
            now = time.perf_counter()
            # Everything due by now goes out in this wake-up.
            due_count = min(total, int((now - t0) * rate) + 1)
            while sent < due_count:
                sender_id, peer = pairs[sent % len(pairs)]
                due = t0 + sent / rate
                msg = self.message(sender_id, peer, SessionType.SINGLE, due, sent)
                self.lean[sender_id].send(msg, due)
                sent += 1
            if sent < total:
                await asyncio.sleep(max(MIN_SLEEP_S, t0 + sent / rate - time.perf_counter()))
        send_end = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_s):
                await sink.settled.wait()
        unacked = sink.outstanding
        self._forget_pending()
        return {
            "sent": sent,
            "send_s": send_end - t0,
            "acked": len(sink.ack_latencies),
            "failed": sink.failed,
            "unacked": unacked,
            "ack_latencies": sink.ack_latencies,
        }

    def _fresh_sink(self) -> Sink:
        """The sink, its figures reset for a new send (late acks of the last are dropped)."""
        self._forget_pending()
        sink = self.sink
        sink.ack_latencies = []
        sink.failed = 0
        return sink

    def _forget_pending(self) -> None:
        for client in self.lean.values():
            client.forget()
        self.sink.outstanding = 0
        self.sink.settled.set()

    async def group_send(self, sender_id: int, group_id: int, messages: int) -> dict[str, Any]:
        """Send `messages` messages into a group at once (one sender, all in flight);
        returns their due times and the send→ack latencies."""
        sender = self.lean[sender_id]
        sink = self._fresh_sink()
        dues = []
        for index in range(messages):
            due = time.perf_counter()
            dues.append(due)
            sender.send(self.message(sender_id, group_id, SessionType.GROUP, due, index), due)
        async with asyncio.timeout(GROUP_SEND_TIMEOUT_S):
            await sink.settled.wait()
        if sink.failed:
            raise RuntimeError(f"{sink.failed} of {messages} group messages were refused")
        latencies = list(sink.ack_latencies)
        return {"dues": dues, "ack_latencies": latencies}

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
                msg = self.message(sender_id, receiver, SessionType.SINGLE, due, index)
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
        for client in self.lean.values():
            client.close()
        self.lean.clear()


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
