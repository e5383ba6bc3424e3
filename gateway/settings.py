"""The gate's settings sections: ``[gateway]`` (listeners, limits, timers) and ``[login]``
(password hashing and failed-login throttling).

`coffeebus.settings.Settings` puts them in the settings file; the gate reads only these.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Annotated

import msgspec

from schemas.settings import Port, Positive, PositiveInt

__all__ = ["GatewaySettings", "LoginSettings", "MultiLoginPolicy"]


class MultiLoginPolicy(enum.StrEnum):
    """What a new login does to the user's other connections."""

    #: A new login kicks an older one of the same client type (the seed's behaviour).
    KICK_SAME_TYPE = "kick_same_type"
    #: A new login kicks every older connection of the user.
    KICK_ALL = "kick_all"
    #: Any number of connections per user and client type.
    ALLOW_ALL = "allow_all"


class GatewaySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One gate: listeners, limits and timers (PROTOCOL.md "Timings in the seed")."""

    #: Unique per gate process; names its downlink topic ``im.gate.<gate_id>``.
    gate_id: str = ""
    #: Address the TCP and WebSocket listeners bind.
    host: str = "0.0.0.0"
    #: TCP listener (CoffeeChat frames).
    tcp_port: Port = 8000
    #: WebSocket listener (one binary message per frame).
    ws_port: Port = 8001
    #: Address clients should use, published in the gate list (defaults to host:port).
    advertised_host: str = ""
    #: PEM certificate file: both listeners speak TLS (WSS) when set with ``tls_key``.
    tls_cert: str | None = None
    #: PEM private key of ``tls_cert``.
    tls_key: str | None = None
    #: Largest frame accepted (bytes, 16 B to 16 MiB); larger closes the connection.
    max_frame_size: Annotated[int, msgspec.Meta(ge=16, le=16 * 1024 * 1024)] = 1024 * 1024
    #: Connections one gate holds at most; more are refused.
    max_connections: PositiveInt = 100_000
    #: New connections per second one source address may open (token bucket), and the
    #: burst above that rate (gateway/admission.py).
    conn_rate_per_ip: Positive = 20.0
    #: Burst of new connections above ``conn_rate_per_ip``.
    conn_burst_per_ip: PositiveInt = 100
    #: Networks not limited per address: loopback (a local proxy makes every client look
    #: like 127.0.0.1), and put a trusted load balancer's addresses here.
    conn_rate_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    #: A connection must log in within this many seconds.
    login_timeout_s: Positive = 15.0
    #: A frame begun must be complete within this many seconds (slow-loris senders).
    frame_timeout_s: Positive = 30.0
    #: Heartbeat interval clients are expected to keep.
    heartbeat_interval_s: Positive = 60.0
    #: A connection silent for this many heartbeat intervals is closed.
    idle_heartbeats: Positive = 3.0
    #: Token bucket per connection for frames sent to the server.
    rate_limit_per_s: Positive = 50.0
    #: Burst of frames above ``rate_limit_per_s``.
    rate_limit_burst: PositiveInt = 100
    #: Frames queued for a connection that does not read before it is disconnected.
    send_queue_frames: PositiveInt = 1_000
    #: ``kick_same_type`` (a new login kicks an older one of the same client type), ``kick_all`` or
    #: ``allow_all``.
    multi_login: MultiLoginPolicy = MultiLoginPolicy.KICK_SAME_TYPE
    #: SIGTERM: how long to wait for connections to close before exiting anyway.
    drain_timeout_s: Positive = 10.0


class LoginSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[login]``: password hashing and failed-login throttling at the gates
    (docs/security.md, "Logins").

    A gate refuses a login with ErrorRsp RATE_LIMITED, at once and without checking it, when
    the password pool is full or when an account or address it names is backing off. The
    throttle's counters live in Redis on the real services, so every gate shares them.
    """

    #: threads that hash and verify passwords (0: one per core), at a lower CPU priority
    #: than the event loop
    password_workers: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: password checks that may wait for a thread; a login beyond that is refused
    #: RATE_LIMITED at once (the connection may retry after a second)
    password_queue: Annotated[int, msgspec.Meta(ge=0)] = 16
    #: how much lower the hashing threads' CPU priority is than the event loop's (Linux
    #: nice, 0-19): under load the cores go to logged-in users' traffic first; 0 on a
    #: machine whose only load is the gate, if password logins matter more than latency
    password_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10
    #: failed password logins of one account (user name) before each further one delays
    #: the next attempt (token logins are not counted per account: docs/security.md)
    account_free_failures: Annotated[int, msgspec.Meta(ge=0)] = 5
    #: failed logins (token or password) from one address (an IPv6 /64) before each
    #: further one delays the next
    address_free_failures: Annotated[int, msgspec.Meta(ge=0)] = 30
    #: the first delay after the free failures; it doubles with each further failure ...
    backoff_initial_s: Positive = 1.0
    #: ... up to this
    backoff_max_s: Positive = 300.0
    #: a counter is forgotten this long after its last failure (a success resets an
    #: account's at once)
    failure_window_s: Positive = 900.0
    #: networks not throttled per address: loopback (a local proxy makes every client look
    #: like 127.0.0.1); put a trusted load balancer's addresses here, and ``[]`` when
    #: clients connect directly
    address_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

    def __post_init__(self) -> None:
        for network in self.address_exempt:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"address_exempt: {exc}") from None
