"""Password hashing: salted scrypt from the standard library.

A stored hash reads ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (salt and hash in unpadded
URL-safe base64), so the cost parameters travel with each hash and can be raised later
without invalidating old ones. The default cost (n=2**14, r=8, p=1: 16 MiB and some tens of
milliseconds of one core per hash) is the interactive-login setting scrypt's author
recommends. Every user gets a fresh random salt, so equal passwords hash differently.

Hashing is deliberately slow and CPU-bound, so the async helpers run it in a worker thread
(`asyncio.to_thread`; hashlib releases the GIL while it works): a password login never stalls
the event loop that serves every other connection of a gate.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import logging
import secrets

import msgspec

from store.errors import InvalidUserInputError

logger = logging.getLogger(__name__)

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
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _verify_against_dummy(password: str) -> None:
    verify_password(password, _dummy_hash())


async def hash_password_async(password: str, *, params: ScryptParams = DEFAULT_PARAMS) -> str:
    """`hash_password` in a worker thread."""
    return await asyncio.to_thread(hash_password, password, params=params)


async def verify_password_async(password: str, encoded: str | None) -> bool:
    """`verify_password` in a worker thread.

    With no stored hash (unknown user, or a user without a password) it still spends one
    hash's worth of time and returns False, so response times do not tell which user names
    exist.
    """
    if encoded is None:
        await asyncio.to_thread(_verify_against_dummy, password)
        return False
    return await asyncio.to_thread(verify_password, password, encoded)
