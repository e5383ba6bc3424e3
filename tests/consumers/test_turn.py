"""TURN REST credentials in channel tokens (consumers/turn.py), against a vector computed
with another implementation: ``printf '%s' 1700086400:42 | openssl dgst -sha1 -hmac north
-binary | base64``."""

from __future__ import annotations

import json

from consumers.turn import channel_token, turn_credentials

VECTOR = ("1700086400:42", "L2hcb1MC2B5KQuhQpPefyMtMg+A=")


def test_credentials_are_what_coturn_use_auth_secret_checks() -> None:
    assert turn_credentials("north", 42, now_s=1_700_000_000, ttl_s=86_400) == VECTOR


def test_token_is_the_turn_rest_json_for_the_user() -> None:
    token = channel_token(
        "north", 42, now_s=1_700_000_000, ttl_s=86_400, uris=["turn:turn.example.com:3478"]
    )
    assert json.loads(token) == {
        "username": VECTOR[0],
        "password": VECTOR[1],
        "ttl": 86_400,
        "uris": ["turn:turn.example.com:3478"],
    }


def test_no_secret_no_credentials() -> None:
    assert channel_token("", 42, now_s=1_700_000_000, ttl_s=60, uris=["turn:x"]) == ""
