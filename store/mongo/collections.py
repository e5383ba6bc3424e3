"""Every MongoDB collection CoffeeBus uses, and every index it needs, declared in one place.

`store.mongo.client.ensure_indexes` creates the indexes below at start; nothing else creates an
index. Only features a MongoDB-compatible server without transactions supports are used
(FerretDB v1: no partial, sparse or TTL indexes), so uniqueness that would need a partial
index is designed around instead — see *users*.

Collections and their intended shard keys
-----------------------------------------

``users``
    One document per user, ``_id`` = user id. A user name is optional, yet names must be
    unique, and without sparse or partial indexes a unique index would treat every missing
    name as the same value. So every document carries ``name_key``: the user name when there
    is one, otherwise ``#<user_id>`` — a value no real name can take because names may not
    start with ``#`` (`store.users.validate_user_name`). The unique index on ``name_key``
    then enforces unique names with one atomic single-document write, and a password login
    is one indexed lookup. Intended to stay **unsharded** (one small document per user);
    should it ever need sharding (by ``_id``), MongoDB requires unique indexes to be prefixed
    by the shard key, and the name index moves to a ``user_names`` collection keyed by name.
``messages``
    Conversation timelines, ``_id = "<conv>|<client_msg_id>"`` (the idempotency key);
    unique ``(conv, seq)``. Shard key: ``conv`` (`store.mongo.messages`).
``inbox``
    User timelines, ``_id = "<user>|<conv>|<seq>"`` (the idempotency key); unique
    ``(user, conv, seq)`` and ``(user, iseq)``. Shard key: ``user`` (`store.mongo.inbox`).
``sessions``
    Per user per conversation, the last message (written by the fanout group only),
    ``_id = "<user>|<conv>"``; ``(user, upd)`` for the session list. Shard key: ``user``
    (`store.mongo.sessions`).
``session_reads``
    Per user per conversation, the read seq (written by the ack group only), same ``_id``;
    ``(user, upd)`` for the session list, ``(conv, read)`` for group read state. Shard key:
    ``user``. Apart from ``sessions`` so that no document has two writer groups
    (`store.mongo.sessions` says why).
``groups``
    One document per group, ``_id`` = group id; unique ``create_key`` makes a replayed
    create return the first group. Shard key: ``_id`` (`store.mongo.groups`).
``group_members``
    One document per membership, ``_id = "<group>|<user>"``; ``(group, user)`` lists a
    group, ``(user, group)`` a user's groups. Shard key: ``group`` (`store.mongo.groups`).
``seq_sections``
    Persisted sequence sections, ``_id`` = timeline key; shard key: ``_id`` (`store.seq`).
``push_tokens``
    Device push tokens, ``_id = "<provider>:<token>"``; ``(user)`` lists a user's devices.
    Unsharded (`store.push_tokens`).
``push_log``
    Offline pushes already sent, ``_id = "<user>|<conv>|<seq>"`` (the at-most-once claim).
    Shard key: ``_id`` (`store.push_log`).

Why so many composite string ``_id``s: a unique key that *is* the primary key is checked
and looked up by the primary-key index on every server, and FerretDB v1 on SQLite pushes
down no other filter (``explain`` shows ``filterPushdown: false`` for everything but ``_id``
equality), so the idempotency checks and point reads stay fast there too.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

import msgspec


class Collection(StrEnum):
    """Names of the MongoDB collections."""

    USERS = "users"
    MESSAGES = "messages"
    INBOX = "inbox"
    SESSIONS = "sessions"
    SESSION_READS = "session_reads"
    GROUPS = "groups"
    GROUP_MEMBERS = "group_members"
    SEQ_SECTIONS = "seq_sections"
    DELIVERIES = "deliveries"
    PUSH_TOKENS = "push_tokens"
    PUSH_LOG = "push_log"


ASCENDING = 1
DESCENDING = -1


class IndexSpec(msgspec.Struct, frozen=True):
    """One index: its name, its keys in order with their direction, and whether it is unique.

    Indexes are named explicitly so that a changed definition under an existing name fails
    loudly at start instead of silently leaving the old index in place.
    """

    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False


USERS_NAME_KEY_INDEX = IndexSpec(
    name="users_name_key_unique", keys=(("name_key", ASCENDING),), unique=True
)

INDEXES: Mapping[Collection, tuple[IndexSpec, ...]] = MappingProxyType(
    {
        # ``_id`` (the user id) is unique by itself.
        Collection.USERS: (USERS_NAME_KEY_INDEX,),
        Collection.MESSAGES: (
            IndexSpec("messages_conv_seq_unique", (("conv", ASCENDING), ("seq", ASCENDING)), True),
        ),
        Collection.INBOX: (
            IndexSpec(
                "inbox_user_conv_seq_unique",
                (("user", ASCENDING), ("conv", ASCENDING), ("seq", ASCENDING)),
                True,
            ),
            IndexSpec("inbox_user_iseq_unique", (("user", ASCENDING), ("iseq", ASCENDING)), True),
        ),
        Collection.SESSIONS: (
            IndexSpec("sessions_user_upd", (("user", ASCENDING), ("upd", DESCENDING))),
        ),
        Collection.SESSION_READS: (
            IndexSpec("session_reads_user_upd", (("user", ASCENDING), ("upd", DESCENDING))),
            IndexSpec("session_reads_conv_read", (("conv", ASCENDING), ("read", ASCENDING))),
        ),
        Collection.GROUPS: (
            IndexSpec("groups_create_key_unique", (("create_key", ASCENDING),), True),
        ),
        Collection.GROUP_MEMBERS: (
            IndexSpec("group_members_group_user", (("group", ASCENDING), ("user", ASCENDING))),
            IndexSpec("group_members_user_group", (("user", ASCENDING), ("group", ASCENDING))),
        ),
        # _id (the timeline key) is all a section needs.
        Collection.SEQ_SECTIONS: (),
        # _id ("<user>|<conversation>") is all a delivery mark needs.
        Collection.DELIVERIES: (),
        Collection.PUSH_TOKENS: (IndexSpec("push_tokens_user", (("user", ASCENDING),)),),
        # _id (the push's dedupe key) is all a claim needs.
        Collection.PUSH_LOG: (),
    }
)
"""The indexes of each collection, created by `store.mongo.client.ensure_indexes`."""
