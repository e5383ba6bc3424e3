"""Where a gate's memory per idle connection goes: tracemalloc around N logins.

    uv run python -m bench._conn_profile --connections 5000 [--transport tcp|ws] [--top 25]

Runs a real `Gate` in this process, on the embedded bus and stores and on uvloop (as
`coffeebus run` does), and one `bench._conn_load` worker process as the clients (so no
client object is in the measured heap). Between a snapshot before the connections and one
after all N are logged in (after `gc.collect()`), it prints the allocations that grew,
grouped by source line and by file, in bytes per connection, next to the RSS growth per
connection. What RSS grew by beyond what tracemalloc saw is memory allocated outside
Python's allocators (e.g. by libuv with plain malloc) or allocator overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import time
import tracemalloc
from collections.abc import Sequence

import msgspec

from bench._conn_load import OK, Job, raise_nofile, run_worker, token_for
from bench.conn_bench import free_port, rss_kb
from coffeebus.roles import GateRole
from coffeebus.settings import Settings
from coffeebus.wiring import Mode, open_runtime
from store.ids import UserId
from store.users import UserImport

FIRST_USER = 80_000_000


def _report(diff: list[tracemalloc.StatisticDiff], n: int, top: int, title: str) -> float:
    grown = [d for d in diff if d.size_diff > 0]
    total = sum(d.size_diff for d in diff)
    print(f"\n{title}: tracemalloc net {total / n:,.0f} B/connection")
    print(f"{'B/conn':>8} {'blocks/conn':>11}  where")
    for stat in grown[:top]:
        where = stat.traceback[0]
        per = f"{stat.size_diff / n:8,.0f} {stat.count_diff / n:11.2f}"
        print(f"{per}  {where.filename}:{where.lineno}")
    return total / n


async def profile(n: int, transport: str, top: int) -> None:
    tcp, ws = free_port(), free_port()
    base = Settings()
    settings = msgspec.structs.replace(
        base,
        gateway=msgspec.structs.replace(
            base.gateway,
            gate_id="bench-profile",
            host="127.0.0.1",
            tcp_port=tcp,
            ws_port=ws,
            heartbeat_interval_s=3600.0,
        ),
    )
    async with open_runtime(settings, Mode.EMBEDDED, client_id="profile") as rt:
        for i in range(n):
            uid = FIRST_USER + i
            await rt.users.upsert(UserImport(user_id=UserId(uid), token=token_for(uid)))
        role = GateRole(rt)
        await role.start()
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        counters = ctx.Array("q", 2)
        job = Job(
            index=0,
            host="127.0.0.1",
            port=tcp if transport == "tcp" else ws,
            transport="tcp" if transport == "tcp" else "ws",
            first_user=FIRST_USER,
            count=n,
            sources=("127.0.0.2",),
            in_flight=100,
            connect_timeout_s=60.0,
        )
        worker = ctx.Process(target=run_worker, args=(job, theirs, counters))
        gc.collect()
        tracemalloc.start(1)
        rss0 = rss_kb_self()
        before = tracemalloc.take_snapshot()
        worker.start()
        start = time.perf_counter()
        reply = await asyncio.to_thread(mine.recv)
        held = role.gate.connections
        print(
            f"{reply[1]:,} logged in ({reply[2]} failed) in {time.perf_counter() - start:.1f} s;"
            f" gate holds {held:,}; counters {counters[OK]:,}"
        )
        gc.collect()
        after = tracemalloc.take_snapshot()
        rss1 = rss_kb_self()
        traced_per_conn = 0.0
        for key, title in (("lineno", "by line"), ("filename", "by file")):
            traced_per_conn = _report(after.compare_to(before, key), held, top, title)
        print(
            f"\nRSS grew {(rss1 - rss0) * 1024 / held:,.0f} B/connection; tracemalloc saw "
            f"{traced_per_conn:,.0f} B/connection (its own bookkeeping adds to RSS too)"
        )
        tracemalloc.stop()
        mine.send(("close",))
        await asyncio.to_thread(mine.recv)
        worker.join()
        await role.stop()


def rss_kb_self() -> int:
    import os  # noqa: PLC0415

    return rss_kb(os.getpid())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=5_000)
    parser.add_argument("--transport", choices=("tcp", "ws"), default="tcp")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    raise_nofile()
    import uvloop  # noqa: PLC0415

    uvloop.run(profile(args.connections, args.transport, args.top))


if __name__ == "__main__":
    main()
