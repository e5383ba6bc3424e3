"""Channel tokens: time-limited TURN credentials (the "TURN REST API" scheme).

Media never passes through CoffeeBus: the parties of a call exchange it peer to peer or
through a TURN relay the operator runs. The relay must let only this deployment's users in,
without CoffeeBus telling it about every call. coturn's ``use-auth-secret`` (and most TURN
servers: Pion, eturnal, STUNner) check credentials that anyone holding a shared secret can
mint (draft-uberti-behave-turn-rest-00):

- username = ``<expiry unix seconds>:<user id>``
- password = base64(HMAC-SHA1(secret, username))

The relay recomputes the password from the username and refuses an expired one. The call
group puts one such pair, for the user it is sent to, in ``ChannelInfo.channel_token`` as the
draft's JSON response — ``{"username", "password", "ttl", "uris"}`` — a WebRTC client passes
it to ``RTCPeerConnection({iceServers: [{urls: uris, username, credential: password}]})``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence

__all__ = ["channel_token", "turn_credentials"]


def turn_credentials(secret: str, user_id: int, *, now_s: int, ttl_s: int) -> tuple[str, str]:
    """(username, password) for `user_id`, valid until ``now_s + ttl_s``."""
    username = f"{now_s + ttl_s}:{user_id}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def channel_token(secret: str, user_id: int, *, now_s: int, ttl_s: int, uris: Sequence[str]) -> str:
    """The ``channel_token`` for `user_id`: the TURN REST JSON, or "" without a secret."""
    if not secret:
        return ""
    username, password = turn_credentials(secret, user_id, now_s=now_s, ttl_s=ttl_s)
    return json.dumps(
        {"username": username, "password": password, "ttl": ttl_s, "uris": list(uris)},
        separators=(",", ":"),
    )
