"""The providers ``[push]`` settings enable (`configured_providers`).

A provider is enabled by configuring it — webhook: ``webhook_url``; APNs: ``apns_team_id``,
``apns_key_id`` and ``apns_key_path``; FCM: ``fcm_project_id`` and ``fcm_credentials_path``.
Key files are read once, when the push group starts; a missing or unreadable one stops the
start with a `PushConfigError` naming the setting, rather than failing every push later.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from consumers.push_providers.apns import ApnsProvider, ProviderToken
from consumers.push_providers.base import Provider, RetrySettings
from consumers.push_providers.fcm import FcmProvider, ServiceAccount
from consumers.push_providers.webhook import WebhookPushProvider

if TYPE_CHECKING:
    from consumers.settings import PushSettings

__all__ = ["PushConfigError", "configured_providers"]


class PushConfigError(ValueError):
    """A provider's settings cannot be used (the message names the setting)."""


def configured_providers(settings: PushSettings) -> dict[str, Provider]:
    """The enabled providers by name (`store.push_tokens.PushProvider` values)."""
    retry = RetrySettings(
        max_attempts=settings.max_attempts,
        initial_backoff_s=settings.initial_backoff_s,
        max_backoff_s=settings.max_backoff_s,
    )
    timeout = settings.request_timeout_s
    providers: dict[str, Provider] = {}
    if settings.webhook_url:
        providers["webhook"] = WebhookPushProvider(
            url=settings.webhook_url, secret=settings.webhook_secret, retry=retry, timeout_s=timeout
        )
    if settings.apns_team_id or settings.apns_key_id or settings.apns_key_path:
        if not (settings.apns_team_id and settings.apns_key_id and settings.apns_key_path):
            raise PushConfigError(
                "[push] APNs needs apns_team_id, apns_key_id and apns_key_path together"
            )
        token = ProviderToken(
            team_id=settings.apns_team_id,
            key_id=settings.apns_key_id,
            private_key_pem=_read("apns_key_path", settings.apns_key_path),
        )
        providers["apns"] = ApnsProvider(
            url=settings.apns_url,
            token=token,
            topic=settings.apns_topic,
            retry=retry,
            timeout_s=timeout,
        )
    if settings.fcm_project_id or settings.fcm_credentials_path:
        if not (settings.fcm_project_id and settings.fcm_credentials_path):
            raise PushConfigError("[push] FCM needs fcm_project_id and fcm_credentials_path")
        raw = _read("fcm_credentials_path", settings.fcm_credentials_path)
        try:
            account = msgspec.json.decode(raw, type=ServiceAccount)
        except msgspec.DecodeError as exc:
            raise PushConfigError(
                f"[push] fcm_credentials_path {settings.fcm_credentials_path}: not a service "
                f"account key file: {exc}"
            ) from exc
        providers["fcm"] = FcmProvider(
            url=settings.fcm_url,
            project_id=settings.fcm_project_id,
            account=account,
            token_url=settings.fcm_token_url,
            retry=retry,
            timeout_s=timeout,
        )
    return providers


def _read(setting: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PushConfigError(f"[push] {setting} {path}: cannot read: {exc.strerror}") from exc
