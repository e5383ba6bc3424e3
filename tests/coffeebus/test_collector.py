"""The ``[process]`` collector policy every process applies once its roles run."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from coffeebus.roles import tune_collector
from coffeebus.settings import ProcessSettings, SettingsError, load_settings


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_the_default_policy_freezes_the_heap_and_raises_the_thresholds() -> None:
    held = [object() for _ in range(10)]  # something alive to freeze, besides the modules
    tune_collector(ProcessSettings())
    assert gc.get_threshold() == (50_000, 20, 100)
    assert gc.get_freeze_count() > 0
    assert held


@pytest.mark.usefixtures("restored_collector")
def test_pythons_policy_is_a_setting_away() -> None:
    settings = load_settings(
        env={
            "COFFEEBUS_PROCESS__GC_FREEZE": "false",
            "COFFEEBUS_PROCESS__GC_THRESHOLDS": "[700, 10, 10]",
        }
    )
    frozen = gc.get_freeze_count()
    tune_collector(settings.process)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == frozen


def test_a_threshold_of_zero_is_refused() -> None:
    with pytest.raises(SettingsError, match="gc_thresholds"):
        load_settings(env={"COFFEEBUS_PROCESS__GC_THRESHOLDS": "[0, 10, 10]"})
