"""The HTTP API's settings section, ``[api]``.

`coffeebus.settings.Settings` puts it in the settings file; the API reads only this.
"""

from __future__ import annotations

import msgspec

from schemas.settings import Port

__all__ = ["ApiSettings"]


class ApiSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The HTTP server API for business servers."""

    #: Address the HTTP API binds; anything but loopback requires ``api_keys``.
    host: str = "127.0.0.1"
    #: HTTP API port.
    port: Port = 18080
    #: Bearer keys accepted on business endpoints. None configured: loopback only.
    api_keys: tuple[str, ...] = ()
