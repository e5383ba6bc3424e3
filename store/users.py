"""Users: the model, the `UserStore` protocol and the checks every store makes.

A user is imported by a business server (token, nick name, avatar, attach info, and
optionally a user name and password) and then logs in through a gate, by token (the common
path, checked on every login) or by user name and password.

Implementations:

- `store.memory.users.MemoryUserStore`: the embedded mode's store and the reference for the
  contract tests.
- `store.mongo.users.MongoUserStore`: MongoDB ``users`` with a Redis token-check cache.

Security notes: tokens are compared in constant time; generated tokens carry 256 random bits;
passwords are kept only as salted scrypt hashes (`store.passwords`), hashed and verified in
the store's `store.passwords.PasswordPool` (bounded: a full pool refuses a verification with
`PasswordPoolFull`). A token check never returns the password hash.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import secrets
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from store.errors import InvalidUserInputError
from store.ids import MAX_USER_ID, UserId
from store.passwords import PasswordPool, ScryptParams

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
    banned: bool = False
    """Banned by an operator: every login is refused (the token is kept)."""
    banned_ms: int = 0
    """When the current — or, once lifted, the last — ban began (0: never banned)."""
    ban_reason: str = ""
    deleted_ms: int = 0
    """When the user was deleted (0: not deleted). A deleted user is a tombstone: no
    profile, no usable token, no password or name; it never logs in, `UserStore.list_users`
    and token checks treat it as unknown, and its id is never used again."""

    @property
    def deleted(self) -> bool:
        """Whether the user was deleted."""
        return self.deleted_ms > 0

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
        """Return the user (a deleted one as its tombstone), or None when there never was
        such a user."""
        ...

    async def list_users(self, user_ids: Iterable[UserId]) -> list[User]:
        """Return the users that exist (deleted ones do not) among `user_ids`, in the order
        first asked for."""
        ...

    async def check_token(self, user_id: UserId, token: str) -> TokenCheck:
        """Check a login token (the hot path of every login; may be served from a cache).
        A deleted user is UNKNOWN_USER; a banned one is OK (with `User.banned`): the caller
        refuses it, once the token proved who is asking."""
        ...

    async def check_password(self, user_name: str, password: str) -> User | None:
        """Return the user when the name exists and the password matches, else None (a
        banned user is returned: the caller refuses it).

        An unknown name costs one hash all the same. Raises `store.passwords.PasswordPoolFull`
        when the password pool is full (the caller refuses the login at once).
        """
        ...

    async def upsert(self, user: UserImport) -> User:
        """Create or update a user; return it as stored.

        Raises `UserNameTakenError` if the user name belongs to another user,
        `UserDeletedError` if the id was deleted, and `InvalidUserInputError` for an invalid
        id, name, token or password.
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
        once. Raises `UnknownUserError` when there is no such user (`UserDeletedError`: it
        was deleted)."""
        ...

    async def set_banned(self, user_id: UserId, banned: bool, *, reason: str = "") -> User:
        """Ban (with `reason`) or unban the user; return it as stored. Idempotent: banning a
        banned user changes nothing (its `User.banned_ms` stays the first ban's). Raises
        `UnknownUserError` (`UserDeletedError`)."""
        ...

    async def delete(self, user_id: UserId) -> tuple[User, bool]:
        """Make the user a tombstone (`User.deleted_ms`): profile, token, password and user
        name gone (the name free for others), every check refused from now on. Returns the
        tombstone and whether this call deleted it (False: it was deleted already). Raises
        `UnknownUserError` when there never was such a user."""
        ...


def tombstone_of(user: User, now_ms: int) -> User:
    """What a deleted user leaves behind (`UserStore.delete`): its id and times, nothing
    personal, a random token nobody knows, no password or name."""
    return User(
        user_id=user.user_id,
        token=generate_token(),
        created_ms=user.created_ms,
        updated_ms=now_ms,
        deleted_ms=now_ms,
    )


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


async def hash_passwords(
    users: Sequence[UserImport], params: ScryptParams, pool: PasswordPool
) -> list[str | None]:
    """The password hash of each import that sets a password (None for the others)."""

    async def one(user: UserImport) -> str | None:
        if user.password is None:
            return None
        return await pool.hash(user.password, params=params)

    return list(await asyncio.gather(*(one(user) for user in users)))


def validate_import(user: UserImport) -> None:
    """Check every field of an import the store constrains."""
    validate_user_id(user.user_id)
    if user.user_name is not None:
        validate_user_name(user.user_name)
    if user.token is not None:
        validate_token(user.token)
    # The password itself is checked when it is hashed.
