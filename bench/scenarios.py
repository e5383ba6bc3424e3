"""The scenarios of `make bench`: c2c ramp, group fan-out, pull, and the raw baselines.

Each scenario takes a started `Rig` (or a broker / server address for the baselines) and a
`rich` progress display, and returns a JSON-ready dict of its figures. On the real services
c2c, group and pull also report the projection's lag, catch-up and writes beside their own
figures (a ``projection`` section: `bench.projection`); every message they measure is sent
by SDK clients through the gate.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.progress import Progress

from bench import bus_bench
from bench._load import PAD, STAMP
from bench.projection import watching
from bench.rig import BenchError, Rig, cpu_spent, split
from bench.stats import c2c_step, latency_ms, max_rate_within
from schemas.codes import GroupType
from schemas.ids import ConnId, GateId, UserId
from store.mongo.client import connect_mongo

DELIVERY_POLL_S = 0.1
#: How long the group scenario's warm-up message may take to reach every inbox.
WARM_UP_S = 300.0
#: How long a scenario waits, after its load, for the projection to catch up (the plans of
#: `bench.run` pass their own).
CATCH_UP_S = 120.0
#: How long the pull scenario waits for the reader's inbox to hold every message sent.
INBOX_WAIT_S = 120.0
#: How long the group scenario waits for the machine to be idle before its burst
#: (`Rig.quiet`).
QUIET_LIMIT_S = 60.0


@dataclass(frozen=True)
class Ramp:
    """How a c2c ramp runs."""

    rates: tuple[float, ...]
    step_s: float
    drain_s: float
    pairs: int


async def c2c(
    rig: Rig, ramp: Ramp, progress: Progress, label: str, *, catch_up_s: float = CATCH_UP_S
) -> dict[str, Any]:
    """Open-loop c2c sends at each rate of `ramp` until the system falls behind; on the real
    services, the projection's highest lag per step, and its catch-up after the ramp."""
    task = progress.add_task(label, total=len(ramp.rates))
    ids = await rig.server("users", 2 * ramp.pairs)
    pairs = list(zip(ids[: ramp.pairs], ids[ramp.pairs :], strict=True))
    shares = split(pairs, rig.n_workers)
    await rig.each([("login", [u for p in share for u in p], True) for share in shares])
    await _c2c_warm_up(rig, shares)
    steps: list[dict[str, Any]] = []
    projection = None
    async with watching(rig, settle_s=catch_up_s) as watch:
        for rate in ramp.rates:
            progress.update(task, description=f"{label} {rate:,.0f}/s")
            await rig.server("monitor")  # start the step's loop-lag and GC window
            cpu_before = rig.cpu_seconds()
            sends = await rig.each(
                [
                    ("c2c", share, rate / rig.n_workers, ramp.step_s, ramp.drain_s)
                    for share in shares
                ]
            )
            sent = sum(s["sent"] for s in sends)
            latencies = await _deliveries(rig, sent, ramp.drain_s)
            step = c2c_step(rate, ramp.step_s, sends, latencies)
            step["server"] = await rig.server("monitor")
            # Where the machine's CPU went in the step (send window and drain): per part,
            # and per acked message in total.
            cpu = cpu_spent(cpu_before, rig.cpu_seconds())
            step["cpu_s"] = cpu
            step["cpu_us_per_msg"] = (
                round(sum(cpu.values()) * 1e6 / step["acked"], 1) if step["acked"] else None
            )
            # The server's CPU per message is the efficiency figure a busy machine disturbs
            # least.
            step["server_cpu_us_per_msg"] = (
                round(step["server"]["cpu_s"] * 1e6 / step["acked"], 1) if step["acked"] else None
            )
            if watch is not None:
                step["projection_max_lag"] = watch.take_max()
            steps.append(step)
            progress.advance(task)
            p99 = step["send_deliver_ms"]["p99"]
            # The ramp goes on while the system keeps up, however long its latencies: the
            # highest rate kept up is a throughput figure (a step whose messages outlast the
            # drain falls behind by definition, and later steps would only queue more).
            if not step["keeps_up"] or p99 is None:
                break
        progress.update(task, completed=len(ramp.rates))
        if watch is not None:
            progress.update(task, description=f"{label}: projection catching up")
            acked = sum(s["acked"] for s in steps)
            # Every acked message is logged once, and lands in two inboxes (both sides').
            projection = await watch.finish(
                time.perf_counter(), catch_up_s, messages=acked, inbox_entries=2 * acked
            )
    kept = [s for s in steps if s["keeps_up"]]
    result = {
        "pairs": ramp.pairs,
        "step_s": ramp.step_s,
        "drain_s": ramp.drain_s,
        "workers": rig.n_workers,
        "steps": steps,
        "max_rate_p99_100ms": max_rate_within(steps),
        "max_delivered_per_s": max((s["delivered_per_s"] for s in kept), default=0.0),
        "fell_behind_at": None if steps and steps[-1]["keeps_up"] else steps[-1]["offered_per_s"],
    }
    if projection is not None:
        result["projection"] = projection
    return result


async def _c2c_warm_up(rig: Rig, shares: list[list[tuple[int, int]]]) -> None:
    """One unmeasured message per pair, acked and delivered before the ramp: the first
    message of a timeline reserves its seq section (a store round trip per conversation and
    per inbox, ~100 ms each on FerretDB), which users who have chatted before did long ago.
    """
    sends = await rig.each([("c2c", share, len(share), 1.0, WARM_UP_S) for share in shares])
    sent = sum(s["sent"] for s in sends)
    acked = sum(s["acked"] for s in sends)
    delivered = len(await _deliveries(rig, sent, WARM_UP_S))
    if acked < sent or delivered < sent:
        raise BenchError(
            f"c2c warm-up: {acked} of {sent} messages acked and {delivered} delivered "
            f"in {WARM_UP_S:g} s"
        )


async def _deliveries(rig: Rig, expected: int, drain_s: float) -> list[float]:
    """The send→deliver latencies the workers saw, once `expected` arrived or after
    `drain_s` (a receiver may trail its sender's ack by a fan-out hop)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + drain_s
    while True:
        for got in await rig.each([("deliveries",)] * rig.n_workers):
            latencies.extend(got["latencies"])
        if len(latencies) >= expected or time.perf_counter() > deadline:
            return latencies
        await asyncio.sleep(DELIVERY_POLL_S)


async def group(
    rig: Rig,
    members: int,
    group_type: int,
    messages: int,
    *,
    progress: Progress,
    label: str,
    catch_up_s: float = CATCH_UP_S,
) -> dict[str, Any]:
    """One sender, `messages` messages into a new group of `members`, half of them online;
    on the real services, the projection's lag and inbox writes beside the deliveries."""
    ids = await rig.server("users", members)
    owner = ids[0]
    group_id = await rig.server("group", owner, ids[1:], group_type)
    online = ids[1 : members // 2 + 1]
    offline = ids[members // 2 + 1 :]
    task = progress.add_task(label, total=len(online) * messages)
    shares = split(online, rig.n_workers)
    shares[0] = [owner, *shares[0]]
    await rig.each([("login", share, True) for share in shares])
    # One warm-up message, not measured: the first message to a member's inbox reserves its
    # seq section (a store round trip per member, ~100 ms each on FerretDB), which members
    # who have chatted before have done long ago.
    await rig.worker(0, "group_send", owner, group_id, 1)
    sample = [offline[0], offline[len(offline) // 2], offline[-1], owner]
    warm = await rig.server("wait_inbox", sample, 1, WARM_UP_S, wait_s=WARM_UP_S + 60)
    if warm is None:
        raise BenchError(f"the warm-up message did not reach every inbox in {WARM_UP_S:g} s")
    await _arrivals(rig, len(online), WARM_UP_S)
    await rig.each([("deliveries",)] * rig.n_workers)  # forget every push so far

    projection = None
    async with watching(rig, settle_s=catch_up_s) as watch:
        # After the projection settled and the machine is idle again (what the scenarios
        # before left to do is not this burst's): the server's figures and the machine's CPU
        # from here on are the burst's.
        quiet = await rig.quiet(QUIET_LIMIT_S)
        await rig.server("monitor")
        cpu_before = rig.cpu_seconds()
        sent = await rig.worker(0, "group_send", owner, group_id, messages)
        dues: list[float] = sent["dues"]
        expected = len(online) * messages
        arrivals = await _arrivals(
            rig, expected, 60 + 2 * expected / 1000, lambda n: progress.update(task, completed=n)
        )
        count = sum(len(t) for t in arrivals.values())
        server = await rig.server("monitor")
        cpu = cpu_spent(cpu_before, rig.cpu_seconds())
        # The inbox of offline members is written by the same fan-out: the last of a sample
        # of them complete means every member's inbox is (fan-out writes all in bulk per
        # batch).
        inbox_done = await rig.server("wait_inbox", sample, 1 + messages, 120.0, wait_s=180.0)
        if watch is not None:
            progress.update(task, description=f"{label}: projection catching up")
            projection = await watch.finish(
                time.perf_counter(),
                catch_up_s,
                messages=messages,
                inbox_entries=members * messages,
            )
    first = min(dues)
    last_arrival = max((max(t) for t in arrivals.values()), default=None)
    to_last = [max(arrivals[i]) - dues[i] for i in sorted(arrivals) if arrivals[i]]
    result = {
        "members": members,
        "group_type": GroupType(group_type).name,
        "online": len(online),
        "messages": messages,
        "deliveries": count,
        "expected_deliveries": expected,
        "deliveries_per_s": round(count / (last_arrival - first), 1) if last_arrival else 0.0,
        "inbox_writes": members * messages,
        "inbox_writes_per_s": (
            round(members * messages / (inbox_done - first), 1) if inbox_done else None
        ),
        "send_ack_ms": latency_ms(sent["ack_latencies"]),
        "to_last_online_ms": latency_ms(to_last),
        "server": server,
        "quiet_before": quiet,
        # Where the machine's CPU went from the first send to the last arrival (the
        # projection's catching up afterwards not included).
        "cpu_s": cpu,
        "cpu_us_per_delivery": round(sum(cpu.values()) * 1e6 / count, 1) if count else None,
    }
    if projection is not None:
        result["projection"] = projection
    return result


async def _arrivals(
    rig: Rig, expected: int, limit_s: float, seen: Callable[[int], object] = lambda n: None
) -> dict[int, list[float]]:
    """Group pushes received by the workers (message index -> arrival times), once
    `expected` arrived or after `limit_s`."""
    arrivals: dict[int, list[float]] = {}
    deadline = time.perf_counter() + limit_s
    count = 0
    while count < expected and time.perf_counter() < deadline:
        for got in await rig.each([("deliveries",)] * rig.n_workers):
            for index, times in got["arrivals"].items():
                arrivals.setdefault(int(index), []).extend(times)
        count = sum(len(t) for t in arrivals.values())
        seen(count)
        if count < expected:
            await asyncio.sleep(DELIVERY_POLL_S)
    return arrivals


async def pull(
    rig: Rig,
    sessions: int,
    per_session: int,
    rounds: int,
    *,
    progress: Progress,
    label: str,
    catch_up_s: float = CATCH_UP_S,
) -> dict[str, Any]:
    """Session list and history page latency for a user with `sessions` conversations of
    `per_session` messages.

    The messages reach the system as production messages do: `sessions` peers each send
    `per_session` messages to the reader through the gate (each peer one at a time, acked;
    the reader offline). Once the reader's inbox holds them all and, on the real services,
    the projection has caught up, the reader logs in; its first session list is not
    measured (it pays the one-time merge of the document store's state into a hot state the
    writers created: docs/architecture.md, "Completeness"); then `rounds` session lists and
    as many 20-message history pages of random sessions, one request at a time."""
    task = progress.add_task(f"{label}: sending", total=3)
    reader, *peers = await rig.server("users", 1 + sessions)
    shares = split(peers, rig.n_workers)
    await rig.each([("login", share) for share in shares])
    total = sessions * per_session
    projection = None
    async with watching(rig) as watch:
        sends = await rig.each([("send_to", share, reader, per_session) for share in shares])
        failed = sum(s["failed"] for s in sends)
        errors = [e for s in sends for e in s["errors"]][:3]
        started = min(s["started"] for s in sends)
        ended = max(s["ended"] for s in sends)
        progress.update(task, advance=1, description=f"{label}: inbox")
        # A failed send may still be stored: on the shared topics another run's msg group
        # handles this run's records too, and its refusal ("no such user") can reach the
        # sender before this run's ack. The inbox says what arrived.
        inbox_at = await rig.server(
            "wait_inbox", [reader], total, INBOX_WAIT_S, wait_s=INBOX_WAIT_S + 60
        )
        if inbox_at is None:
            raise BenchError(
                f"pull: the reader's inbox lacked messages after {INBOX_WAIT_S:g} s "
                f"({failed} of {total} sends failed, e.g. {errors})"
            )
        if watch is not None:
            progress.update(task, description=f"{label}: projection catching up")
            # Every message is logged once and lands in two inboxes (the reader's, the peer's).
            projection = await watch.finish(
                ended, catch_up_s, messages=total, inbox_entries=2 * total
            )
    progress.update(task, advance=1, description=f"{label}: reading")
    await rig.worker(0, "login", [reader])
    first = await rig.worker(0, "sessions", reader)
    got = await rig.worker(0, "pull", reader, peers, rounds)
    progress.update(task, completed=3)
    result = {
        "sessions": sessions,
        "messages": total,
        "rounds": rounds,
        "send_s": round(ended - started, 2),
        "sent_per_s": round(total / (ended - started), 1),
        "send_failed": failed,
        "send_ack_ms": latency_ms([x for s in sends for x in s["ack_latencies"]]),
        "inbox_complete_s": round(inbox_at - started, 2),
        "first_session_list": {
            "ms": round(first["seconds"] * 1000, 2),
            "sessions": first["sessions"],
            "unread": first["unread"],
        },
        "session_list_ms": latency_ms(got["sessions"]),
        "history_page_ms": latency_ms(got["history"]),
        "history_page_size": 20,
    }
    if projection is not None:
        result["projection"] = projection
    return result


def record_size() -> int:
    """Bytes of the value of a c2c record on im.up.msg as the gate publishes it."""
    from schemas.envelope import Origin, encode_envelope, make_envelope  # noqa: PLC0415
    from schemas.pb.coffeechat import message_pb2  # noqa: PLC0415

    body = message_pb2.MsgData(
        from_user_id=(1 << 40) + 1,
        to_session_id=(1 << 40) + 2,
        client_msg_id=str(uuid.uuid4()),
        session_type=1,  # type: ignore[arg-type]
        msg_type=1,  # type: ignore[arg-type]
        msg_data=STAMP.pack(0.0, 0) + PAD,
    ).SerializeToString()
    origin = Origin(
        gate_id=GateId("bench-0123456789"),
        conn_id=ConnId(1),
        user_id=UserId((1 << 40) + 1),
        client_type=0,
        frame_seq=1,
    )
    return len(encode_envelope(make_envelope(0x0301, body, origin=origin)))


async def kafka_baseline(
    bootstrap: str, records: int, partitions: int, progress: Progress
) -> dict[str, Any]:
    """Raw aiokafka produce→consume of `records` c2c-sized records (`bus_bench.run_raw`)."""
    task = progress.add_task("baseline kafka", total=1)
    size = record_size()
    topic = f"bench.baseline.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
        run = await bus_bench.run_raw(bootstrap, topic, bus_bench.payloads(records, size), 500)
    finally:
        await admin.delete_topics([topic])
        await admin.close()
    progress.advance(task)
    return {
        "kafka_roundtrip_per_s": round(run.end_to_end_rps, 1),
        "kafka_publish_per_s": round(run.publish_rps, 1),
        "kafka_records": records,
        "kafka_record_bytes": size,
        "kafka_partitions": partitions,
    }


async def mongo_baseline(url: str, documents: int, progress: Progress) -> dict[str, Any]:
    """Raw PyMongo `insert_many` of inbox-entry-sized documents, 1,000 per call."""
    task = progress.add_task("baseline mongo", total=documents)
    client = connect_mongo(url, socket_timeout=120)
    name = f"cbbench_base_{uuid.uuid4().hex[:8]}"
    collection = client[name]["inbox"]
    batch = 1000
    message = {"c": 1 << 41, "s": 1, "m": "x" * 36, "f": 1 << 40, "d": b"x" * 52, "t": 0}
    try:
        started = time.perf_counter()
        for first in range(0, documents, batch):
            docs = [
                {"_id": f"{n}", "u": n % 1000, "q": n, "msg": message}
                for n in range(first, min(documents, first + batch))
            ]
            await collection.insert_many(docs, ordered=False)
            progress.advance(task, len(docs))
        elapsed = time.perf_counter() - started
    finally:
        await client.drop_database(name)
        await client.close()
    return {
        "mongo_bulk_insert_per_s": round(documents / elapsed, 1),
        "mongo_documents": documents,
        "mongo_batch": batch,
    }
