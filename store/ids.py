"""Identifier types the stores speak in: the project-wide ids of `schemas.ids`.

Re-exported here so store modules keep one import line; the types *are* those of
`schemas.ids`, so ids flow from the wire through the gate and the consumers into the stores
without conversions.
"""

from __future__ import annotations

from schemas.ids import ConnId, GateId, UserId

__all__ = ["MAX_USER_ID", "ConnId", "GateId", "UserId"]

MAX_USER_ID = 2**63 - 1
"""MongoDB and Redis scores hold signed 64-bit integers; larger protocol ids are rejected."""
