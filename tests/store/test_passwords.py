"""Password hashing: format, salting, verification, bounds, and not blocking the loop."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading

import pytest

from store.errors import InvalidUserInputError
from store.passwords import (
    MAX_PASSWORD_BYTES,
    PasswordPool,
    PasswordPoolFull,
    ScryptParams,
    hash_password,
    hash_password_async,
    verify_password,
    verify_password_async,
)

CHEAP = ScryptParams(n=2**4, r=1, p=1)


def test_hash_format_carries_its_parameters() -> None:
    encoded = hash_password("pässword")
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(salt) == 22  # 16 bytes, unpadded base64
    assert len(digest) == 43  # 32 bytes
    assert verify_password("pässword", encoded)
    assert not verify_password("password", encoded)


def test_same_password_different_salt_and_hash() -> None:
    first, second = hash_password("same", params=CHEAP), hash_password("same", params=CHEAP)
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]
    assert verify_password("same", first)
    assert verify_password("same", second)


def test_parameters_are_read_from_the_stored_hash() -> None:
    encoded = hash_password("pw", params=CHEAP)
    assert encoded.startswith("scrypt$16$1$1$")
    assert verify_password("pw", encoded)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "bcrypt$16$1$1$c2FsdA$aGFzaA",
        "scrypt$16$1$1$$aGFzaA",
        "scrypt$15$1$1$c2FsdA$aGFzaA",  # n not a power of two
        "scrypt$2097152$8$1$c2FsdA$aGFzaA",  # n above the bound: would allocate 2 GiB
        "scrypt$16$1$1$!!!$aGFzaA",
        "scrypt$x$1$1$c2FsdA$aGFzaA",
    ],
)
def test_unusable_stored_hashes_never_match(stored: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="store.passwords"):
        assert not verify_password("anything", stored)
    assert "unusable stored password hash" in caplog.text


def test_empty_and_overlong_passwords_are_refused() -> None:
    with pytest.raises(InvalidUserInputError):
        hash_password("")
    with pytest.raises(InvalidUserInputError):
        hash_password("x" * (MAX_PASSWORD_BYTES + 1), params=CHEAP)
    encoded = hash_password("x" * MAX_PASSWORD_BYTES, params=CHEAP)
    assert not verify_password("x" * (MAX_PASSWORD_BYTES + 1), encoded)
    assert not verify_password("", encoded)


@pytest.mark.parametrize(("n", "r", "p"), [(1, 8, 1), (3, 8, 1), (2**21, 8, 1), (16, 0, 1)])
def test_invalid_parameters(n: int, r: int, p: int) -> None:
    with pytest.raises(ValueError, match="scrypt"):
        ScryptParams(n=n, r=r, p=p)


async def test_hashing_runs_off_the_event_loop() -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    encoded = await hash_password_async("pw")
    assert await verify_password_async("pw", encoded)
    assert not await verify_password_async("pw", None)  # no stored hash: still costs a hash
    stop.set()
    await task
    # Three default-cost hashes take tens of milliseconds; a blocked loop would not tick.
    assert ticks > 10


async def test_the_pool_refuses_a_verification_when_full_and_never_a_hash() -> None:
    cheap = ScryptParams(n=16, r=1, p=1)
    pool = PasswordPool(workers=1, queue=1)
    encoded = hash_password("pw", params=cheap)
    release = threading.Event()
    try:
        held = asyncio.ensure_future(pool._run(functools.partial(release.wait, 30)))
        queued = asyncio.ensure_future(pool.verify("pw", encoded))
        await asyncio.sleep(0)  # both submitted: one running, one queued
        assert pool.pending == 2
        with pytest.raises(PasswordPoolFull):
            await pool.verify("pw", encoded)
        assert pool.refused == 1
        hashed = asyncio.ensure_future(pool.hash("new", params=cheap))  # waits, not refused
        release.set()
        await held
        assert await queued
        assert (await hashed).startswith("scrypt$16$1$1$")
        # No stored hash: a dummy of the given cost is verified, and the answer is False.
        assert not await pool.verify("pw", None, dummy_params=cheap)
        assert pool.pending == 0
    finally:
        release.set()
        pool.close()
