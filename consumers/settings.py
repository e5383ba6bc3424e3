"""The consumer groups' own settings sections: ``[biz]``, ``[webhooks]``, ``[push]`` and
``[calls]``.

`coffeebus.settings.Settings` puts them in the settings file; the groups read them (and
``[messaging]``, `schemas.settings`) through `consumers.runtime.Runtime`.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.bizevents import EVENT_TYPES, BizTopic
from schemas.settings import Positive, PositiveInt

__all__ = ["BizSettings", "CallSettings", "PushSettings", "WebhookSettings", "WebhookSubscriber"]


class PushSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[push]``: the delivery timer (``timer`` group) and offline push (``push`` group).

    A provider is enabled by configuring it: devices registered for a provider that is not
    configured are skipped (and counted). docs/push.md has an operator's walk-through.
    """

    #: how long after a message is fanned out a device must have acked it (seconds)
    timer_delay_s: Positive = 5.0
    #: the start of a text message put in pushes (characters; 0: only "new message from X")
    preview_chars: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    #: HTTP timeout of one provider request (seconds)
    request_timeout_s: Positive = 10.0
    #: attempts per device for 5xx, 429 and timeouts before the push is recorded as failed
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 4
    #: First retry of a provider request after this long, doubling.
    initial_backoff_s: Positive = 0.5
    #: Longest wait between two attempts.
    max_backoff_s: Positive = 10.0
    #: webhook provider: the business's own push service (POST JSON); "" disables it
    webhook_url: str = ""
    #: HMAC-SHA256 key of the webhook push signature ("" sends it unsigned)
    webhook_secret: str = ""
    #: APNs (token-based auth) base URL; APNs is enabled by the team id, key id, .p8 key file
    #: and topic below
    apns_url: str = "https://api.push.apple.com"
    #: APNs team id.
    apns_team_id: str = ""
    #: APNs key id of the .p8 key.
    apns_key_id: str = ""
    #: Path of the APNs .p8 signing key.
    apns_key_path: str = ""
    #: the app's bundle id (``apns-topic``); a device may name its own
    apns_topic: str = ""
    #: FCM HTTP v1 base URL; FCM is enabled by the Firebase project and the service account
    #: key below
    fcm_url: str = "https://fcm.googleapis.com"
    #: Firebase project id.
    fcm_project_id: str = ""
    #: Path of the service account JSON key.
    fcm_credentials_path: str = ""
    #: OAuth2 token endpoint ("" = the one in the key file).
    fcm_token_url: str = ""


class CallSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[calls]``: VoIP signalling (the ``call`` group) and the media channel's TURN
    credentials (docs/protocol-extensions.md, "Calls")."""

    #: a call nobody answered ends with cancel after this long (seconds)
    invite_timeout_s: Positive = 60.0
    #: a party that sends no VoipHeartbeat for this long ends the call (seconds)
    heartbeat_timeout_s: Positive = 30.0
    #: how often each call-group member looks for calls whose deadline has passed (seconds)
    sweep_interval_s: Positive = 1.0
    #: coturn's ``static-auth-secret`` (``use-auth-secret``): channel tokens carry TURN REST
    #: credentials signed with it; "" puts no credentials in tokens
    turn_secret: str = ""
    #: how long TURN credentials stay valid (seconds)
    turn_ttl_s: PositiveInt = 86400
    #: TURN/STUN URIs given to clients with the credentials (``turn:turn.example.com:3478``)
    turn_uris: tuple[str, ...] = ()


class BizSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[biz]``: business events on the ``biz.*`` topics and client uploads (docs/events.md)."""

    #: put message contents (``msg_data``, base64) in ``message.stored`` events
    include_msg_data: bool = True
    #: largest C2SUploadReq.payload accepted (bytes); larger uploads are refused TOO_LARGE
    max_c2s_payload_bytes: PositiveInt = 256 * 1024


class WebhookSubscriber(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One business server receiving events by webhook (``[[webhooks.subscribers]]``).

    An event is sent when its type matches one of `events` (a type such as
    ``"message.stored"``, or a pattern such as ``"message.*"``) or its topic is one of
    `topics`; with both empty, every event is sent.
    """

    #: names the subscriber in logs and dead letters (letters, digits, ``-_.``)
    name: str
    #: where events are POSTed (http or https)
    url: str
    #: HMAC-SHA256 key of ``X-CoffeeBus-Signature`` (shared with the receiver)
    secret: str
    events: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    #: seconds one POST may take (connect, send, answer)
    timeout_s: Positive = 10.0
    #: POSTs per event for 5xx, 429, timeouts and connection errors before it is dead-lettered
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError(f"webhook subscriber name {self.name!r}: letters, digits, -_. only")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook {self.name}: url must be http:// or https://")
        if not self.secret:
            raise ValueError(f"webhook {self.name}: a secret is required (it signs every POST)")
        for pattern in self.events:
            prefix = pattern[:-1] if pattern.endswith("*") else None
            known = (
                any(t.startswith(prefix) for t in EVENT_TYPES)
                if prefix is not None
                else pattern in EVENT_TYPES
            )
            if not known:
                raise ValueError(
                    f"webhook {self.name}: event {pattern!r} matches none of {list(EVENT_TYPES)}"
                )
        events_topics = {t.value for t in BizTopic} - {BizTopic.WEBHOOK_DEAD_LETTER.value}
        for topic in self.topics:
            if topic not in events_topics:
                raise ValueError(
                    f"webhook {self.name}: topic {topic!r} is none of {sorted(events_topics)}"
                )


class WebhookSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[webhooks]``: business servers that receive events by signed HTTP POSTs."""

    #: ``[[webhooks.subscribers]]`` tables: ``name``, ``url``, ``secret``, ``events``, ``topics``,
    #: ``timeout_s``, ``max_attempts`` (docs/events.md). In the environment: a TOML array of inline
    #: tables.
    subscribers: tuple[WebhookSubscriber, ...] = ()
    #: first retry after this long, doubling up to `max_backoff_s` (plus jitter)
    initial_backoff_s: Positive = 0.5
    #: Longest wait between two POSTs of one event.
    max_backoff_s: Positive = 30.0
    #: POSTs in flight at once over every subscriber and partition of one process
    max_connections: PositiveInt = 100

    def __post_init__(self) -> None:
        names = [s.name for s in self.subscribers]
        if len(set(names)) != len(names):
            raise ValueError(f"webhook subscriber names must be unique: {names}")
