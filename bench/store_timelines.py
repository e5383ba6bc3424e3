"""Timeline store figures on the real MongoDB-compatible server (not a test).

Measures the write fan-out of one group message (inbox bulk insert of N entries, then the
N session touches) and the session list with exact unread counts under both strategies.

    uv run python -m bench.store_timelines [--url mongodb://127.0.0.1:27017] [--members 1000]

Uses a throw-away database, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from schemas.codes import MsgType, SessionType
from schemas.ids import ConversationId, UserId, c2c_conversation_id, group_conversation_id
from store.inbox import InboxEntry
from store.messages import StoredMessage
from store.mongo.client import connect_mongo, ensure_indexes
from store.mongo.inbox import MongoInboxStore
from store.mongo.sessions import MongoSessionStore
from store.sessions import SessionTouch


def stored_message(
    conversation: ConversationId, seq: int, sender: int, to: int, stype: int
) -> StoredMessage:
    """A 64-byte text message at `seq` of `conversation`, as the msg group would store it."""
    return StoredMessage(
        conversation=conversation,
        seq=seq,
        client_msg_id=uuid.uuid4().hex,
        from_user_id=UserId(sender),
        to_session_id=to,
        session_type=stype,
        msg_type=MsgType.TEXT,
        msg_data=b"x" * 64,
        created_ms=1_700_000_000_000 + seq,
    )


async def main(url: str, members: int, rounds: int, sessions: int) -> None:
    client = connect_mongo(url, socket_timeout=60)
    name = f"cbbench_{uuid.uuid4().hex[:8]}"
    db = client[name]
    await ensure_indexes(db)
    try:
        inbox = MongoInboxStore(db)
        store = MongoSessionStore(db, inbox)
        gid = 7
        conv = group_conversation_id(gid)  # type: ignore[arg-type]
        insert_s, touch_s = [], []
        for seq in range(1, rounds + 1):
            msg = stored_message(conv, seq, 1, gid, SessionType.GROUP)
            entries = [
                InboxEntry(user_id=UserId(u), inbox_seq=seq, message=msg)
                for u in range(1, members + 1)
            ]
            started = time.perf_counter()
            await inbox.append_many(entries)
            insert_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            await store.touch_many([SessionTouch(e.user_id, msg) for e in entries])
            touch_s.append(time.perf_counter() - started)
        print(
            f"inbox bulk insert: {members} entries in {statistics.median(insert_s) * 1000:.0f} ms "
            f"median = {members / statistics.median(insert_s):,.0f} entries/s"
        )
        print(
            f"session touches:   {members} in {statistics.median(touch_s) * 1000:.0f} ms "
            f"median = {members / statistics.median(touch_s):,.0f} touches/s"
        )
        # One user with `sessions` c2c conversations, 5 messages each, then the list.
        reader = UserId(1)
        batch_entries, touches = [], []
        iseq = 10_000
        for peer in range(2, sessions + 2):
            c = c2c_conversation_id(reader, UserId(peer))
            for seq in range(1, 6):
                m = stored_message(c, seq, peer, 1, SessionType.SINGLE)
                iseq += 1
                batch_entries.append(InboxEntry(user_id=reader, inbox_seq=iseq, message=m))
                touches.append(SessionTouch(reader, m))
        await inbox.append_many(batch_entries)
        await store.touch_many(touches)
        total = await db["inbox"].count_documents({})
        for strategy in ("aggregate", "count"):
            store = MongoSessionStore(db, MongoInboxStore(db, unread_strategy=strategy))
            times = []
            for _ in range(3):
                started = time.perf_counter()
                listed = await store.recent(reader, 0, sessions + 1)
                times.append(time.perf_counter() - started)
            print(
                f"session list ({strategy}): {len(listed)} sessions, inbox of {total:,} entries: "
                f"{statistics.median(times) * 1000:.0f} ms median"
            )
    finally:
        await client.drop_database(name)
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="mongodb://127.0.0.1:27017")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.members, args.rounds, args.sessions))
