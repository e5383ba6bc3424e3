"""Users: the model, the `UserStore` protocol, and its in-memory twin.

A user is imported by a business server (token, nick name, avatar, attach info, and
optionally a user name and password) and then logs in through a gate, by token (the common
path, checked on every login) or by user name and password.

Implementations:

- `MemoryUserStore` (here): the embedded mode's store and the reference for the contract
  tests.
- `store.users_mongo.MongoUserStore`: MongoDB ``users`` with a Redis token-check cache.

Security notes: tokens are compared in constant time; generated tokens carry 256 random bits;
passwords are kept only as salted scrypt hashes (`store.passwords`), verified in a worker
thread. A token check never returns the password hash.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import secrets
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from store.clock import Clock, SystemClock
from store.errors import InvalidUserInputError, UnknownUserError, UserNameTakenError
from store.ids import MAX_USER_ID, UserId
from store.passwords import (
    DEFAULT_PARAMS,
    ScryptParams,
    hash_password_async,
    verify_password_async,
)

MAX_USER_NAME_LENGTH = 64
MAX_TOKEN_LENGTH = 512


class User(msgspec.Struct, frozen=True, kw_only=True):
    """A user as stored."""

    user_id: UserId
    token: str
    nick_name: str = ""
    nick_name_spell: str = ""
    phone: str = ""
    avatar_url: str = ""
    attach_info: str = ""
    user_name: str | None = None
    """Login name for password logins; unique among users; None when the user has none."""
    password_hash: str | None = None
    """`store.passwords` encoding; None when the user cannot log in by password."""
    created_ms: int
    updated_ms: int

    def without_password(self) -> User:
        """This user with the password hash removed (what token checks return)."""
        if self.password_hash is None:
            return self
        return msgspec.structs.replace(self, password_hash=None)


class UserImport(msgspec.Struct, frozen=True, kw_only=True):
    """An import or update of one user. A field left None keeps the stored value (or, for a
    new user, the default: empty strings, a generated token, no user name, no password)."""

    user_id: UserId
    nick_name: str | None = None
    nick_name_spell: str | None = None
    phone: str | None = None
    avatar_url: str | None = None
    attach_info: str | None = None
    token: str | None = None
    user_name: str | None = None
    password: str | None = None
    """Plain text; the store keeps only its salted hash."""

    def profile_fields(self) -> dict[str, str]:
        """The profile fields this import sets."""
        fields = {
            "nick_name": self.nick_name,
            "nick_name_spell": self.nick_name_spell,
            "phone": self.phone,
            "avatar_url": self.avatar_url,
            "attach_info": self.attach_info,
        }
        return {name: value for name, value in fields.items() if value is not None}


class TokenStatus(enum.Enum):
    """Outcome of a token check."""

    OK = "ok"
    BAD_TOKEN = "bad_token"
    UNKNOWN_USER = "unknown_user"


class TokenCheck(msgspec.Struct, frozen=True):
    """Outcome of a token check, with the user (without password hash) when it is OK."""

    status: TokenStatus
    user: User | None = None

    @property
    def ok(self) -> bool:
        """Whether the token is the user's current token."""
        return self.status is TokenStatus.OK


class UserStore(Protocol):
    """Where users live."""

    async def get(self, user_id: UserId) -> User | None:
        """Return the user, or None when there is no such user."""
        ...

    async def list_users(self, user_ids: Iterable[UserId]) -> list[User]:
        """Return the users that exist among `user_ids`, in the order first asked for."""
        ...

    async def check_token(self, user_id: UserId, token: str) -> TokenCheck:
        """Check a login token (the hot path of every login; may be served from a cache)."""
        ...

    async def check_password(self, user_name: str, password: str) -> User | None:
        """Return the user when the name exists and the password matches, else None."""
        ...

    async def upsert(self, user: UserImport) -> User:
        """Create or update a user; return it as stored.

        Raises `UserNameTakenError` if the user name belongs to another user and
        `InvalidUserInputError` for an invalid id, name, token or password.
        """
        ...

    async def create_many(self, users: Sequence[UserImport]) -> list[UserId]:
        """Create the users among `users` that do not exist yet, in bulk; return their ids.

        A user whose id exists, or whose user name is taken, is skipped and left as it is
        (`upsert` updates). For loading many new users at once: on MongoDB one unordered
        insert instead of one upsert round trip per user. Raises `InvalidUserInputError`,
        before writing anything, if any import is invalid.
        """
        ...

    async def rotate_token(self, user_id: UserId) -> str:
        """Give the user a new random token and return it; the old one stops working at
        once. Raises `UnknownUserError` when there is no such user."""
        ...


def generate_token() -> str:
    """A new login token: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(32)


def tokens_equal(stored: str, given: str) -> bool:
    """Compare tokens in constant time."""
    return hmac.compare_digest(stored.encode("utf-8"), given.encode("utf-8"))


def is_valid_user_id(user_id: int) -> bool:
    """Whether `user_id` can be stored (1 … 2**63-1)."""
    return 0 < user_id <= MAX_USER_ID


def validate_user_id(user_id: int) -> None:
    """Raise `InvalidUserInputError` unless `user_id` can be stored."""
    if not is_valid_user_id(user_id):
        raise InvalidUserInputError(f"user id must be in 1..{MAX_USER_ID}, not {user_id}")


def is_valid_user_name(user_name: str) -> bool:
    """Whether `user_name` is a valid login name.

    1-64 printable characters without whitespace, not starting with ``#`` (that prefix is
    reserved for the name key of users without a name, see `store.mongo.collections`).
    """
    return (
        0 < len(user_name) <= MAX_USER_NAME_LENGTH
        and not user_name.startswith("#")
        and user_name.isprintable()
        and not any(ch.isspace() for ch in user_name)
    )


def validate_user_name(user_name: str) -> None:
    """Raise `InvalidUserInputError` unless `user_name` is a valid login name."""
    if not is_valid_user_name(user_name):
        raise InvalidUserInputError(
            f"user name {user_name!r} must be 1-{MAX_USER_NAME_LENGTH} printable characters "
            "without whitespace, not starting with '#'"
        )


def validate_token(token: str) -> None:
    """Raise `InvalidUserInputError` unless `token` is a usable login token."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isprintable():
        raise InvalidUserInputError(f"a token must be 1-{MAX_TOKEN_LENGTH} printable characters")


async def hash_passwords(users: Sequence[UserImport], params: ScryptParams) -> list[str | None]:
    """The password hash of each import that sets a password (None for the others)."""

    async def one(user: UserImport) -> str | None:
        if user.password is None:
            return None
        return await hash_password_async(user.password, params=params)

    return list(await asyncio.gather(*(one(user) for user in users)))


def validate_import(user: UserImport) -> None:
    """Check every field of an import the store constrains."""
    validate_user_id(user.user_id)
    if user.user_name is not None:
        validate_user_name(user.user_name)
    if user.token is not None:
        validate_token(user.token)
    # The password itself is checked when it is hashed.


class MemoryUserStore:
    """The in-memory `UserStore`: the embedded mode's store and the contract tests' twin.

    No coroutine awaits between reading and writing its dicts, so each change is atomic on
    the event loop, as the single-document writes of the MongoDB store are.
    """

    def __init__(
        self, *, clock: Clock | None = None, password_params: ScryptParams = DEFAULT_PARAMS
    ) -> None:
        self._clock = clock or SystemClock()
        self._password_params = password_params
        self._users: dict[UserId, User] = {}
        self._names: dict[str, UserId] = {}

    async def get(self, user_id: UserId) -> User | None:
        """Return the user, or None."""
        return self._users.get(user_id)

    async def list_users(self, user_ids: Iterable[UserId]) -> list[User]:
        """Return the existing users among `user_ids`, in first-asked order."""
        found = (self._users.get(uid) for uid in dict.fromkeys(user_ids))
        return [user for user in found if user is not None]

    async def check_token(self, user_id: UserId, token: str) -> TokenCheck:
        """Check a login token."""
        user = self._users.get(user_id)
        if user is None:
            return TokenCheck(TokenStatus.UNKNOWN_USER)
        if not tokens_equal(user.token, token):
            return TokenCheck(TokenStatus.BAD_TOKEN)
        return TokenCheck(TokenStatus.OK, user.without_password())

    async def check_password(self, user_name: str, password: str) -> User | None:
        """Return the user when name and password match."""
        user_id = self._names.get(user_name) if is_valid_user_name(user_name) else None
        user = self._users.get(user_id) if user_id is not None else None
        stored = user.password_hash if user is not None else None
        if await verify_password_async(password, stored):
            return user
        return None

    async def upsert(self, user: UserImport) -> User:
        """Create or update a user."""
        validate_import(user)
        password_hash = (
            None
            if user.password is None
            else await hash_password_async(user.password, params=self._password_params)
        )
        # Hashing awaited a thread: `_apply` reads the current state only now, and in one go.
        return self._apply(user, password_hash)

    async def create_many(self, users: Sequence[UserImport]) -> list[UserId]:
        """Create the users that do not exist yet (see `UserStore.create_many`)."""
        for user in users:
            validate_import(user)
        hashes = await hash_passwords(users, self._password_params)
        created = []
        for user, password_hash in zip(users, hashes, strict=True):
            if user.user_id in self._users or (
                user.user_name is not None and user.user_name in self._names
            ):
                continue
            self._apply(user, password_hash)
            created.append(user.user_id)
        return created

    def _apply(self, change: UserImport, password_hash: str | None) -> User:
        uid = change.user_id
        if change.user_name is not None and self._names.get(change.user_name, uid) != uid:
            raise UserNameTakenError(f"user name {change.user_name!r} is taken")
        now = self._clock.now_ms()
        old = self._users.get(uid)
        if old is None:
            old = User(user_id=uid, token=generate_token(), created_ms=now, updated_ms=now)
        new = msgspec.structs.replace(old, updated_ms=now, **change.profile_fields())
        if change.token is not None:
            new = msgspec.structs.replace(new, token=change.token)
        if password_hash is not None:
            new = msgspec.structs.replace(new, password_hash=password_hash)
        if change.user_name is not None and change.user_name != old.user_name:
            if old.user_name is not None:
                del self._names[old.user_name]
            self._names[change.user_name] = uid
            new = msgspec.structs.replace(new, user_name=change.user_name)
        self._users[uid] = new
        return new

    async def rotate_token(self, user_id: UserId) -> str:
        """Give the user a new random token."""
        user = self._users.get(user_id)
        if user is None:
            raise UnknownUserError(f"no user {user_id}")
        token = generate_token()
        self._users[user_id] = msgspec.structs.replace(
            user, token=token, updated_ms=self._clock.now_ms()
        )
        return token
