"""Fixtures of the security tests: the whole-system fixtures of the consumer tests (a
runtime embedded or on the real services, gates, consumer groups, SDK clients)."""

from tests.consumers.conftest import embedded_system, real_system, system

__all__ = ["embedded_system", "real_system", "system"]
