"""Fault tests (`make chaos`): fixtures, and the run's last line.

Every fault test checks its load with `tests.chaos.checker` and hands the report to
`record_fault_result(report, faults=N)`. When the run selected any test marked ``chaos``,
the very last line pytest prints is the sum over all of them::

    faults=N lost=0 duplicated=0 out_of_order=0

It is printed from `pytest_unconfigure`, after pytest's own summary line, so scripts can take
``tail -1``.

`real_system` (tests/consumers/conftest.py: runtime, in-process gates, users and clients on
the real services) is available here too.
"""

from __future__ import annotations

import pytest

from tests.chaos.checker import tally
from tests.consumers.conftest import real_system

__all__ = ["real_system"]

_ran_chaos = pytest.StashKey[bool]()


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_ran_chaos] = any(
        item.get_closest_marker("chaos") is not None for item in session.items
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if not config.stash.get(_ran_chaos, False):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(tally.line())
    else:  # -p no:terminal
        print(tally.line(), flush=True)
