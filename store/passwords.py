"""Password hashing: salted scrypt from the standard library.

A stored hash reads ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (salt and hash in unpadded
URL-safe base64), so the cost parameters travel with each hash and can be raised later
without invalidating old ones. The default cost (n=2**14, r=8, p=1: 16 MiB and some tens of
milliseconds of one core per hash) is the interactive-login setting scrypt's author
recommends. Every user gets a fresh random salt, so equal passwords hash differently.

Hashing is deliberately slow and CPU-bound, and every login by password costs one, so it runs
in a `PasswordPool`: a few threads (one per core by default; hashlib releases the GIL while it
works) at a lower CPU priority than the event loop, so a flood of logins cannot stall the loop
that serves every other connection of a gate, and a bounded queue in front of them: when every
thread is busy and `queue` verifications wait already, `PasswordPool.verify` raises
`PasswordPoolFull` at once and the login is refused (RATE_LIMITED) instead of waiting behind
the flood. Hashing a new password (an import through the server API) waits for a thread: the
business server is trusted, and its imports are not refused.

A verification with no stored hash (an unknown user name, a user without a password) hashes
against a dummy of the store's own cost parameters, so its answer takes as long as a wrong
password's and the time does not tell which names exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import functools
import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import Final, TypeVar

import msgspec

from store.errors import InvalidUserInputError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_SCHEME = "scrypt"
_SALT_BYTES = 16
_HASH_BYTES = 32
MAX_PASSWORD_BYTES = 1024
"""Longer passwords are refused: they only let a caller make the server hash megabytes."""

# Bounds on parameters read back from a stored hash, so a corrupted or planted hash cannot
# make a login allocate gigabytes.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16


class ScryptParams(msgspec.Struct, frozen=True):
    """scrypt cost parameters: CPU/memory cost `n` (a power of two), block size `r`,
    parallelism `p`."""

    n: int = 2**14
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (1 < self.n <= _MAX_N and self.n & (self.n - 1) == 0):
            raise ValueError(f"scrypt n must be a power of two in (1, {_MAX_N}], not {self.n}")
        if not (1 <= self.r <= _MAX_R and 1 <= self.p <= _MAX_P):
            raise ValueError(f"scrypt r and p out of range: r={self.r}, p={self.p}")


DEFAULT_PARAMS = ScryptParams()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: bytes, salt: bytes, params: ScryptParams, dklen: int) -> bytes:
    # hashlib needs maxmem above 128*r*n (plus a little); the default limit (32 MiB) would
    # reject costlier parameters.
    maxmem = 128 * params.r * (params.n + params.p + 2) + 1024 * 1024
    return hashlib.scrypt(
        password, salt=salt, n=params.n, r=params.r, p=params.p, maxmem=maxmem, dklen=dklen
    )


def _password_bytes(password: str) -> bytes:
    data = password.encode("utf-8")
    if not data:
        raise InvalidUserInputError("a password must not be empty")
    if len(data) > MAX_PASSWORD_BYTES:
        raise InvalidUserInputError(f"a password must be at most {MAX_PASSWORD_BYTES} bytes")
    return data


def hash_password(password: str, *, params: ScryptParams = DEFAULT_PARAMS) -> str:
    """Hash `password` with a fresh random salt; return the encoded hash to store.

    Raises `InvalidUserInputError` for an empty or overlong password.
    """
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(_password_bytes(password), salt, params, _HASH_BYTES)
    return f"{_SCHEME}${params.n}${params.r}${params.p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Tell whether `password` matches the stored `encoded` hash (constant-time compare).

    An unparsable hash never matches and is logged: it means corrupted data, not a wrong
    password.
    """
    try:
        scheme, n, r, p, salt_text, digest_text = encoded.split("$")
        if scheme != _SCHEME:
            raise ValueError(f"unknown scheme {scheme!r}")
        params = ScryptParams(n=int(n), r=int(r), p=int(p))
        salt, expected = _unb64(salt_text), _unb64(digest_text)
        if not salt or not expected:
            raise ValueError("empty salt or hash")
    except (ValueError, binascii.Error) as exc:
        logger.warning("unusable stored password hash: %s", exc)
        return False
    try:
        candidate = _password_bytes(password)
    except InvalidUserInputError:
        return False
    return hmac.compare_digest(_scrypt(candidate, salt, params, len(expected)), expected)


@functools.cache
def _dummy_hash(params: ScryptParams) -> str:
    return hash_password(secrets.token_urlsafe(16), params=params)


def _verify(password: str, encoded: str | None, dummy_params: ScryptParams) -> bool:
    if encoded is None:
        verify_password(password, _dummy_hash(dummy_params))
        return False
    return verify_password(password, encoded)


#: How much lower than the event loop's the hashing threads' CPU priority is by default
#: (Linux nice, ``[login] password_nice``): when the cores are busy, the scheduler gives them
#: to the loop's heartbeats and messages first, and to logins with what is left.
HASH_THREAD_NICE: Final = 10


class PasswordPoolFull(Exception):
    """Every hashing thread is busy and the queue is full: refuse the login now."""


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _lower_priority(nice: int) -> None:
    # On Linux each thread has its own nice value (setpriority on its thread id), which
    # starts as the process's: raise it by `nice`.
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError) as exc:  # pragma: no cover - not Linux, or not allowed
        logger.debug("hashing threads keep their priority: %r", exc)


class PasswordPool:
    """Threads that hash and verify passwords, with a bounded queue (module docstring).

    Args:
        workers: threads (0: one per core, `cores`).
        queue: verifications that may wait for a thread; one more raises `PasswordPoolFull`.
        nice: how much lower the threads' CPU priority is than the process's (0: the same).
    """

    def __init__(self, *, workers: int = 0, queue: int = 16, nice: int = HASH_THREAD_NICE) -> None:
        if workers < 0 or queue < 0:
            raise ValueError("workers and queue must be >= 0")
        self.workers = workers or cores()
        self.queue = queue
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.workers,
            thread_name_prefix="password",
            initializer=_lower_priority,
            initargs=(nice,),
        )
        #: verifications and hashes submitted and not finished (running or queued)
        self.pending = 0
        #: verifications refused because the pool was full
        self.refused = 0

    @property
    def full(self) -> bool:
        """Whether a verification now would be refused (`PasswordPoolFull`): what a gate asks
        before it spends a throttle check and a user lookup on a login it cannot verify."""
        return self.pending >= self.workers + self.queue

    async def _run(self, fn: Callable[[], _T]) -> _T:
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        finally:
            self.pending -= 1

    async def verify(
        self, password: str, encoded: str | None, *, dummy_params: ScryptParams = DEFAULT_PARAMS
    ) -> bool:
        """`verify_password` on a thread; with no stored hash, against a dummy of
        `dummy_params` (the cost of the store's hashes), then False.

        Raises `PasswordPoolFull` at once when `workers + queue` are pending already.
        """
        if self.full:
            self.refused += 1
            raise PasswordPoolFull(f"{self.pending} password checks pending")
        return await self._run(functools.partial(_verify, password, encoded, dummy_params))

    async def hash(self, password: str, *, params: ScryptParams = DEFAULT_PARAMS) -> str:
        """`hash_password` on a thread (never refused: it waits for one)."""
        return await self._run(functools.partial(hash_password, password, params=params))

    def close(self) -> None:
        """Stop the threads once what is queued is done (nothing new is accepted)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


@functools.cache
def default_pool() -> PasswordPool:
    """The process's pool for stores built without one (one thread per core, queue 16)."""
    return PasswordPool()


async def hash_password_async(password: str, *, params: ScryptParams = DEFAULT_PARAMS) -> str:
    """`hash_password` in the `default_pool`."""
    return await default_pool().hash(password, params=params)


async def verify_password_async(
    password: str, encoded: str | None, *, dummy_params: ScryptParams = DEFAULT_PARAMS
) -> bool:
    """`verify_password` in the `default_pool` (`PasswordPool.verify`).

    With no stored hash (unknown user, or a user without a password) it still spends one
    hash's worth of time and returns False, so response times do not tell which user names
    exist.
    """
    return await default_pool().verify(password, encoded, dummy_params=dummy_params)
