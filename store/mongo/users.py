"""`UserStore` on MongoDB ``users`` (PyMongo's asyncio API), with a Redis token-check cache.

Every login checks a token, so `MongoUserStore.check_token` goes through the token cache
(`store.redis.users.RedisTokenCache`, which says how it stays coherent: every write here
increments the document's ``rev`` and then puts the new state into the cache), and so does
`MongoUserStore.list_users` (the msg group looks up every sender and receiver). The other
reads (`get`, `check_password`) go to MongoDB: they are rarer, and `check_password` needs
the hash, which never enters Redis.

Documents: see `store.mongo.collections` for ``name_key``, the unique login-name key that works
without sparse or partial indexes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Final

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from store.clock import Clock, SystemClock
from store.errors import UnknownUserError, UserDeletedError, UserNameTakenError
from store.ids import UserId
from store.mongo.bulk import insert_new
from store.mongo.client import Document
from store.mongo.collections import Collection
from store.passwords import DEFAULT_PARAMS, PasswordPool, ScryptParams, default_pool
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.users import RedisTokenCache
from store.users import (
    TokenCheck,
    TokenStatus,
    User,
    UserImport,
    generate_token,
    hash_passwords,
    is_valid_user_id,
    is_valid_user_name,
    tokens_equal,
    validate_import,
)

logger = logging.getLogger(__name__)


_PROFILE_FIELDS: Final = ("nick_name", "nick_name_spell", "phone", "avatar_url", "attach_info")
_MAX_UPSERT_ATTEMPTS: Final = 3


def _name_key(user_id: int, user_name: str | None) -> str:
    # Names cannot start with "#", so "#<id>" never collides with a real name.
    return user_name if user_name is not None else f"#{user_id}"


def _to_user(doc: Document) -> User:
    # PyMongo hands 64-bit integers back as bson.Int64; plain ints keep msgspec and equality
    # with the memory twin simple.
    return User(
        user_id=UserId(int(doc["_id"])),
        token=doc["token"],
        nick_name=doc.get("nick_name", ""),
        nick_name_spell=doc.get("nick_name_spell", ""),
        phone=doc.get("phone", ""),
        avatar_url=doc.get("avatar_url", ""),
        attach_info=doc.get("attach_info", ""),
        user_name=doc.get("user_name"),
        password_hash=doc.get("password_hash"),
        created_ms=int(doc["created_ms"]),
        updated_ms=int(doc["updated_ms"]),
        banned=bool(doc.get("banned", False)),
        banned_ms=int(doc.get("banned_ms", 0)),
        ban_reason=doc.get("ban_reason", ""),
        deleted_ms=int(doc.get("deleted_ms", 0)),
    )


class MongoUserStore:
    """`UserStore` on a MongoDB database, with an optional Redis token-check cache.

    Args:
        db: the database holding ``users`` (indexes from `store.mongo.client.ensure_indexes`).
        redis: the cache's Redis client (``decode_responses=False``), or None for no cache.
        keys: the Redis key namespace.
        cache_ttl: seconds a cached token-check entry lives.
        password_params: scrypt cost for new password hashes.
        passwords: where hashes are computed (default: the process's `default_pool`).
        clock: source of the created/updated times.
    """

    def __init__(
        self,
        db: AsyncDatabase[Document],
        redis: RedisClient | None = None,
        *,
        keys: RedisKeys | None = None,
        cache_ttl: float = 600.0,
        password_params: ScryptParams = DEFAULT_PARAMS,
        passwords: PasswordPool | None = None,
        clock: Clock | None = None,
    ) -> None:
        if cache_ttl <= 0:
            raise ValueError("cache_ttl must be positive")
        self._users: AsyncCollection[Document] = db[Collection.USERS]
        self._token_cache = (
            None
            if redis is None
            else RedisTokenCache(redis, keys=keys or RedisKeys(), ttl=cache_ttl)
        )
        self._password_params = password_params
        self._passwords = passwords or default_pool()
        self._clock = clock or SystemClock()

    async def get(self, user_id: UserId) -> User | None:
        """Return the user, or None."""
        if not is_valid_user_id(user_id):
            return None
        doc = await self._users.find_one({"_id": user_id})
        return None if doc is None else _to_user(doc)

    async def list_users(self, user_ids: Iterable[UserId]) -> list[User]:
        """Return the existing users among `user_ids` (without password hashes), in
        first-asked order: from the cache, the misses from MongoDB in one query (and cached,
        "no such user" too), so the msg group's lookups of senders and receivers stay off
        the document store."""
        wanted = [uid for uid in dict.fromkeys(user_ids) if is_valid_user_id(uid)]
        if not wanted:
            return []
        found: dict[UserId, User] = {}
        missing = wanted
        if self._token_cache is not None:
            hits = await self._token_cache.get_many(wanted)
            missing = [uid for uid in wanted if uid not in hits]
            found = {uid: hit.user for uid, hit in hits.items() if hit.user is not None}
        if missing:
            query: Document = (
                {"_id": missing[0]} if len(missing) == 1 else {"_id": {"$in": missing}}
            )
            read: dict[UserId, Document] = {}
            async for doc in self._users.find(query, {"password_hash": False}):
                read[UserId(int(doc["_id"]))] = doc
            fills = []
            for uid in missing:
                stored = read.get(uid)
                user = None if stored is None else _to_user(stored)
                if user is not None:
                    found[uid] = user
                fills.append(self._cache(uid, 0 if stored is None else int(stored["rev"]), user))
            await asyncio.gather(*fills)
        return [found[uid] for uid in wanted if uid in found and not found[uid].deleted]

    async def check_token(self, user_id: UserId, token: str) -> TokenCheck:
        """Check a login token, through the cache when there is one."""
        if not is_valid_user_id(user_id):
            return TokenCheck(TokenStatus.UNKNOWN_USER)
        user = await self._cached_user(user_id)
        if user is None or user.deleted:
            return TokenCheck(TokenStatus.UNKNOWN_USER)
        if not tokens_equal(user.token, token):
            return TokenCheck(TokenStatus.BAD_TOKEN)
        return TokenCheck(TokenStatus.OK, user)

    async def _cached_user(self, user_id: UserId) -> User | None:
        """The user without password hash, from the cache or else from MongoDB."""
        if self._token_cache is not None:
            hit = await self._token_cache.get(user_id)
            if hit is not None:
                return hit.user
        doc = await self._users.find_one({"_id": user_id}, {"password_hash": False})
        user = None if doc is None else _to_user(doc)
        await self._cache(user_id, 0 if doc is None else doc["rev"], user)
        return user

    async def _cache(self, user_id: UserId, rev: int, user: User | None) -> None:
        if self._token_cache is not None:
            await self._token_cache.put(user_id, rev, user)

    async def check_password(self, user_name: str, password: str) -> User | None:
        """Return the user when name and password match (verified in the password pool)."""
        doc = (
            await self._users.find_one({"name_key": user_name})
            if is_valid_user_name(user_name)
            else None
        )
        user = None if doc is None or doc.get("deleted_ms") else _to_user(doc)
        stored = None if user is None else user.password_hash
        if await self._passwords.verify(password, stored, dummy_params=self._password_params):
            return user
        return None

    async def upsert(self, user: UserImport) -> User:
        """Create or update a user in one atomic single-document upsert."""
        validate_import(user)
        password_hash = (
            None
            if user.password is None
            else await self._passwords.hash(user.password, params=self._password_params)
        )
        update = self._upsert_update(user, password_hash)
        for attempt in range(1, _MAX_UPSERT_ATTEMPTS + 1):
            try:
                # A tombstone does not match: the upsert's insert then fails on _id.
                doc = await self._users.find_one_and_update(
                    {"_id": user.user_id, "deleted_ms": {"$exists": False}},
                    update,
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
                break
            except DuplicateKeyError:
                if await self._users.find_one(
                    {"_id": user.user_id, "deleted_ms": {"$exists": True}}, {"_id": True}
                ):
                    raise UserDeletedError(f"user {user.user_id} was deleted") from None
                if user.user_name is not None:
                    holder = await self._users.find_one({"name_key": user.user_name}, {"_id": True})
                    if holder is not None and holder["_id"] != user.user_id:
                        raise UserNameTakenError(f"user name {user.user_name!r} is taken") from None
                # Two upserts creating the same new user raced on _id; the loser retries
                # and now finds the document to update.
                if attempt == _MAX_UPSERT_ATTEMPTS:
                    raise
                logger.debug("upsert of user %d raced on a unique key, retrying", user.user_id)
        if doc is None:  # pragma: no cover - an upsert returning the new document never does
            raise UnknownUserError(f"upsert of user {user.user_id} returned nothing")
        stored = _to_user(doc)
        await self._cache(stored.user_id, doc["rev"], stored)
        return stored

    async def create_many(self, users: Sequence[UserImport]) -> list[UserId]:
        """Create the users that do not exist yet in one unordered bulk insert (see
        `UserStore.create_many`); each new document is the one `upsert` would have made."""
        for user in users:
            validate_import(user)
        hashes = await hash_passwords(users, self._password_params, self._passwords)
        docs = []
        for user, password_hash in zip(users, hashes, strict=True):
            update = self._upsert_update(user, password_hash)
            docs.append({"_id": user.user_id, **update["$setOnInsert"], **update["$set"], "rev": 1})
        skipped = await insert_new(self._users, docs)
        created = [doc for index, doc in enumerate(docs) if index not in skipped]
        # A cached "no such user" (rev 0) gives way to the new user at once, as after upsert.
        await asyncio.gather(*(self._cache(doc["_id"], 1, _to_user(doc)) for doc in created))
        return [UserId(doc["_id"]) for doc in created]

    def _upsert_update(self, user: UserImport, password_hash: str | None) -> Document:
        now = self._clock.now_ms()
        to_set: Document = {"updated_ms": now, **user.profile_fields()}
        on_insert: Document = {
            "created_ms": now,
            **{name: "" for name in _PROFILE_FIELDS if name not in to_set},
        }
        if user.token is not None:
            to_set["token"] = user.token
        else:
            on_insert["token"] = generate_token()
        if user.user_name is not None:
            to_set["user_name"] = user.user_name
            to_set["name_key"] = _name_key(user.user_id, user.user_name)
        else:
            on_insert["name_key"] = _name_key(user.user_id, None)
        if password_hash is not None:
            to_set["password_hash"] = password_hash
        # A user without name or password has no such fields at all: absent reads as None.
        # (FerretDB v1 would drop a null from $setOnInsert anyway, unlike MongoDB.)
        return {"$set": to_set, "$setOnInsert": on_insert, "$inc": {"rev": 1}}

    async def rotate_token(self, user_id: UserId) -> str:
        """Give the user a new random token; the cache follows at once."""
        token = generate_token()
        await self._change(
            user_id, {}, {"$set": {"token": token, "updated_ms": self._clock.now_ms()}}
        )
        return token

    async def set_banned(self, user_id: UserId, banned: bool, *, reason: str = "") -> User:
        """Ban or unban in one conditional update (a no-op when already so)."""
        now = self._clock.now_ms()
        fields: Document = (
            {"banned": True, "banned_ms": now, "ban_reason": reason, "updated_ms": now}
            if banned
            else {"banned": False, "ban_reason": "", "updated_ms": now}
        )
        condition: Document = {"banned": {"$ne": True}} if banned else {"banned": True}
        return await self._change(user_id, condition, {"$set": fields})

    async def delete(self, user_id: UserId) -> tuple[User, bool]:
        """Make the user a tombstone in one update (`UserStore.delete`)."""
        if not is_valid_user_id(user_id):
            raise UnknownUserError(f"no user {user_id}")
        now = self._clock.now_ms()
        to_set: Document = {
            "token": generate_token(),
            "updated_ms": now,
            "deleted_ms": now,
            "name_key": _name_key(user_id, None),  # the name is free for someone else
            "banned": False,
            "banned_ms": 0,
            "ban_reason": "",
            **dict.fromkeys(_PROFILE_FIELDS, ""),
        }
        doc = await self._users.find_one_and_update(
            {"_id": user_id, "deleted_ms": {"$exists": False}},
            {"$set": to_set, "$unset": {"password_hash": "", "user_name": ""}, "$inc": {"rev": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            tombstone = _to_user(doc)
            await self._cache(user_id, doc["rev"], tombstone)
            return tombstone, True
        existing = await self._users.find_one({"_id": user_id})
        if existing is None:
            raise UnknownUserError(f"no user {user_id}")
        return _to_user(existing), False  # deleted before

    async def _change(self, user_id: UserId, condition: Document, update: Document) -> User:
        """Apply `update` to a live user matching `condition` (bumping its revision and the
        cache); a user that does not match is returned as it is (the change was made
        before). Raises `UnknownUserError` / `UserDeletedError`."""
        if not is_valid_user_id(user_id):
            raise UnknownUserError(f"no user {user_id}")
        doc = await self._users.find_one_and_update(
            {"_id": user_id, "deleted_ms": {"$exists": False}, **condition},
            {**update, "$inc": {"rev": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            user = _to_user(doc)
            await self._cache(user_id, doc["rev"], user)
            return user
        existing = await self._users.find_one({"_id": user_id})
        if existing is None:
            raise UnknownUserError(f"no user {user_id}")
        if existing.get("deleted_ms"):
            raise UserDeletedError(f"user {user_id} was deleted")
        return _to_user(existing)
