"""The dependency the handlers declare, provided by `producers.app.create_app`.

Handlers take one ``stores: Stores`` argument rather than one per store: the stores are
`typing.Protocol`s, which Litestar's signature model cannot check with ``isinstance``, while
this concrete holder it can.
"""

from __future__ import annotations

from litestar.di import NamedDependency

from store.routes import RouteStore
from store.users import UserStore

__all__ = ["Stores", "StoresDep"]


class Stores:
    """The stores one application runs on."""

    __slots__ = ("routes", "users")

    def __init__(self, users: UserStore, routes: RouteStore) -> None:
        self.users = users
        self.routes = routes


StoresDep = NamedDependency[Stores]
"""How a handler declares it: ``stores: StoresDep``."""
