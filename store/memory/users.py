"""`UserStore` in memory: the embedded mode's, and the twin in the contract tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from store.clock import Clock, SystemClock
from store.errors import UnknownUserError, UserDeletedError, UserNameTakenError
from store.ids import UserId
from store.passwords import DEFAULT_PARAMS, PasswordPool, ScryptParams, default_pool
from store.users import (
    TokenCheck,
    TokenStatus,
    User,
    UserImport,
    generate_token,
    hash_passwords,
    is_valid_user_name,
    tokens_equal,
    tombstone_of,
    validate_import,
)


class MemoryUserStore:
    """The in-memory `UserStore`: the embedded mode's store and the contract tests' twin.

    No coroutine awaits between reading and writing its dicts, so each change is atomic on
    the event loop, as the single-document writes of the MongoDB store are.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        password_params: ScryptParams = DEFAULT_PARAMS,
        passwords: PasswordPool | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self._password_params = password_params
        self._passwords = passwords or default_pool()
        self._users: dict[UserId, User] = {}
        self._names: dict[str, UserId] = {}

    async def get(self, user_id: UserId) -> User | None:
        """Return the user, or None."""
        return self._users.get(user_id)

    async def list_users(self, user_ids: Iterable[UserId]) -> list[User]:
        """Return the existing users among `user_ids`, in first-asked order."""
        found = (self._users.get(uid) for uid in dict.fromkeys(user_ids))
        return [user for user in found if user is not None and not user.deleted]

    async def check_token(self, user_id: UserId, token: str) -> TokenCheck:
        """Check a login token."""
        user = self._users.get(user_id)
        if user is None or user.deleted:
            return TokenCheck(TokenStatus.UNKNOWN_USER)
        if not tokens_equal(user.token, token):
            return TokenCheck(TokenStatus.BAD_TOKEN)
        return TokenCheck(TokenStatus.OK, user.without_password())

    async def check_password(self, user_name: str, password: str) -> User | None:
        """Return the user when name and password match."""
        user_id = self._names.get(user_name) if is_valid_user_name(user_name) else None
        user = self._users.get(user_id) if user_id is not None else None
        stored = user.password_hash if user is not None else None
        if not await self._passwords.verify(password, stored, dummy_params=self._password_params):
            return None
        assert user is not None  # a None hash never verifies
        current = self._users.get(user.user_id)  # deleted while the hash was checked?
        return current if current is not None and not current.deleted else None

    async def upsert(self, user: UserImport) -> User:
        """Create or update a user."""
        validate_import(user)
        self._refuse_deleted(user.user_id)
        password_hash = (
            None
            if user.password is None
            else await self._passwords.hash(user.password, params=self._password_params)
        )
        # Hashing awaited a thread: `_apply` reads the current state only now, and in one go.
        return self._apply(user, password_hash)

    async def create_many(self, users: Sequence[UserImport]) -> list[UserId]:
        """Create the users that do not exist yet (see `UserStore.create_many`)."""
        for user in users:
            validate_import(user)
        hashes = await hash_passwords(users, self._password_params, self._passwords)
        created = []
        for user, password_hash in zip(users, hashes, strict=True):
            if user.user_id in self._users or (
                user.user_name is not None and user.user_name in self._names
            ):
                continue
            self._apply(user, password_hash)
            created.append(user.user_id)
        return created

    def _refuse_deleted(self, user_id: UserId) -> None:
        user = self._users.get(user_id)
        if user is not None and user.deleted:
            raise UserDeletedError(f"user {user_id} was deleted")

    def _apply(self, change: UserImport, password_hash: str | None) -> User:
        uid = change.user_id
        self._refuse_deleted(uid)  # deleted while the password was hashed
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

    def _live(self, user_id: UserId) -> User:
        user = self._users.get(user_id)
        if user is None:
            raise UnknownUserError(f"no user {user_id}")
        if user.deleted:
            raise UserDeletedError(f"user {user_id} was deleted")
        return user

    async def rotate_token(self, user_id: UserId) -> str:
        """Give the user a new random token."""
        user = self._live(user_id)
        token = generate_token()
        self._users[user_id] = msgspec.structs.replace(
            user, token=token, updated_ms=self._clock.now_ms()
        )
        return token

    async def set_banned(self, user_id: UserId, banned: bool, *, reason: str = "") -> User:
        """Ban or unban (a no-op when already so)."""
        user = self._live(user_id)
        if user.banned == banned:
            return user
        now = self._clock.now_ms()
        if banned:
            user = msgspec.structs.replace(
                user, banned=True, banned_ms=now, ban_reason=reason, updated_ms=now
            )
        else:
            user = msgspec.structs.replace(user, banned=False, ban_reason="", updated_ms=now)
        self._users[user_id] = user
        return user

    async def delete(self, user_id: UserId) -> tuple[User, bool]:
        """Make the user a tombstone (see `UserStore.delete`)."""
        user = self._users.get(user_id)
        if user is None:
            raise UnknownUserError(f"no user {user_id}")
        if user.deleted:
            return user, False
        if user.user_name is not None:
            self._names.pop(user.user_name, None)
        now = self._clock.now_ms()
        tombstone = tombstone_of(user, now)
        self._users[user_id] = tombstone
        return tombstone, True
