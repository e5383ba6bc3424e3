"""Every MongoDB collection CoffeeBus uses, and every index it needs, declared in one place.

`store.mongo.ensure_indexes` creates the indexes below at start; nothing else creates an
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
    Conversation timelines; shard key: conversation id (issue 4).
``inbox``
    User timelines; shard key: user id (issue 4).
``sessions``
    Per user per conversation state; shard key: user id (issue 4).
``groups``
    One document per group; shard key: group id (issue 4).
``group_members``
    One document per membership; shard key: group id (issue 4).
``seq_sections``
    Persisted sequence sections, one per timeline key; shard key: that key (issue 4).
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
    GROUPS = "groups"
    GROUP_MEMBERS = "group_members"
    SEQ_SECTIONS = "seq_sections"


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
        Collection.MESSAGES: (),
        Collection.INBOX: (),
        Collection.SESSIONS: (),
        Collection.GROUPS: (),
        Collection.GROUP_MEMBERS: (),
        Collection.SEQ_SECTIONS: (),
    }
)
"""The indexes of each collection, created by `store.mongo.ensure_indexes`."""
