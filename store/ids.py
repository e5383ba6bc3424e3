"""Identifier types the stores speak in.

`schemas/` will own the project-wide ids; until it exports them, the store declares the ones
it needs here so that every other store module imports them from one place and the switch is
a one-line change.
"""

from __future__ import annotations

from typing import NewType

UserId = NewType("UserId", int)
"""A user's id: the protocol's u64, stored as a signed 64-bit integer (see `MAX_USER_ID`)."""

GateId = NewType("GateId", str)
"""A gate process's id; its downlink topic is ``im.gate.<gate_id>``."""

ConnId = NewType("ConnId", int)
"""A connection's id, unique within its gate."""

MAX_USER_ID = 2**63 - 1
"""MongoDB and Redis scores hold signed 64-bit integers; larger protocol ids are rejected."""
