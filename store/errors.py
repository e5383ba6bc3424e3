"""Errors raised by the stores.

Exception tree::

    StoreError
    ├── UnknownUserError      an operation names a user that does not exist
    │   └── UserDeletedError  ... because it was deleted (its id stays retired)
    ├── UserNameTakenError    a user name already belongs to another user
    ├── InvalidUserInputError a value the store refuses (also a ValueError)
    └── IndexConflictError    an index exists under a declared name with another definition

Driver errors (PyMongo, redis-py) are not wrapped: they mean the service is unreachable or
broken, and the caller's retry or crash policy applies to them as they are.
"""

from __future__ import annotations


class StoreError(Exception):
    """Root of the errors the stores raise on purpose."""


class UnknownUserError(StoreError):
    """The user does not exist."""


class UserDeletedError(UnknownUserError):
    """The user was deleted: the id cannot be used again."""


class UserNameTakenError(StoreError):
    """The user name belongs to another user."""


class InvalidUserInputError(StoreError, ValueError):
    """A user id, user name or password the store refuses."""


class IndexConflictError(StoreError):
    """The database has an index under a declared name but with another definition: the
    code and the database disagree, and starting anyway would run without the index the
    code relies on."""
