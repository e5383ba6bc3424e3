"""Failed-login throttling: exponential back-off per account and per source address.

Every failed login counts against its *subjects*: the account it named (a user name, for
password logins) and the address it came from (IPv4, or the /64 of an IPv6 address — one
host's share). A subject may fail `ThrottlePolicy.free_failures` times; each failure after
that makes it wait before its next attempt — `initial_s`, doubling with every further
failure up to `max_s` — and while it waits every login naming it is refused at once
(RATE_LIMITED), before the store or a password hash is touched. A counter is forgotten
`window_s` after its subject's last failure, and a successful login resets its account's
(never its address's: one user logging in proves nothing about the others behind it).

Attempts refused while waiting are not failures: a client retrying in a loop is told to wait
each time, but its back-off grows only with real failures.

The state lives in Redis on the real services (`store.redis.login_throttle`), so it holds
across every gate (an attacker spreading over gates meets one counter), and in memory in the
embedded process (`store.memory.login_throttle`).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from typing import Protocol

import msgspec

__all__ = [
    "LoginThrottle",
    "Subject",
    "SubjectKind",
    "ThrottlePolicy",
    "address_subject",
    "backoff_s",
]


class SubjectKind(enum.StrEnum):
    """What a counter counts the failures of."""

    ACCOUNT = "login-account"
    ADDRESS = "login-address"


class Subject(msgspec.Struct, frozen=True):
    """One counter: an account or an address."""

    kind: SubjectKind
    name: str


class ThrottlePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How many failures are free and how the back-off grows (``[login]`` settings)."""

    account_free_failures: int = 5
    address_free_failures: int = 30
    initial_s: float = 1.0
    max_s: float = 300.0
    window_s: float = 900.0

    def __post_init__(self) -> None:
        if self.account_free_failures < 0 or self.address_free_failures < 0:
            raise ValueError("free failures must be >= 0")
        if not 0 < self.initial_s <= self.max_s or self.window_s <= 0:
            raise ValueError("need 0 < initial_s <= max_s and window_s > 0")

    def free(self, kind: SubjectKind) -> int:
        """The failures of a subject of this kind that cost nothing."""
        return (
            self.account_free_failures
            if kind is SubjectKind.ACCOUNT
            else self.address_free_failures
        )


def backoff_s(failures: int, free: int, policy: ThrottlePolicy) -> float:
    """How long a subject with `failures` failures waits after its last one (0: not at all)."""
    over = failures - free
    if over <= 0:
        return 0.0
    # 2**over overflows a float long before the cap matters: cap the exponent first.
    return min(policy.max_s, policy.initial_s * 2.0 ** min(over - 1, 64))


def address_subject(address: str) -> Subject:
    """The address counter of a client address: the address itself for IPv4 (and anything
    that does not parse), the /64 network for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return Subject(SubjectKind.ADDRESS, address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d, as a dual-stack socket sees IPv4
            return Subject(SubjectKind.ADDRESS, str(ip.ipv4_mapped))
        return Subject(SubjectKind.ADDRESS, str(ipaddress.IPv6Network((ip, 64), strict=False)))
    return Subject(SubjectKind.ADDRESS, str(ip))


class LoginThrottle(Protocol):
    """Where failed logins are counted (module docstring)."""

    async def wait_s(self, subjects: Sequence[Subject]) -> float:
        """How long until a login naming `subjects` may be tried (0: now): the longest wait
        of any of them."""
        ...

    async def failed(self, subjects: Sequence[Subject]) -> float:
        """Count a failed login against each subject; return the longest wait it armed."""
        ...

    async def succeeded(self, subject: Subject) -> None:
        """Forget the subject's failures (an account that logged in)."""
        ...
