"""The ``[process]`` policy every process applies once its roles run: its collector and
its CPU priority."""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from coffeebus.roles import tune_process
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
    tune_process(ProcessSettings())
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
    tune_process(settings.process)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == frozen


def test_a_threshold_of_zero_is_refused() -> None:
    with pytest.raises(SettingsError, match="gc_thresholds"):
        load_settings(env={"COFFEEBUS_PROCESS__GC_THRESHOLDS": "[0, 10, 10]"})


def _niceness_after(settings: ProcessSettings, answer: Connection) -> None:
    tune_process(settings)
    answer.send(os.nice(0))


def test_nice_lowers_the_priority_of_the_process() -> None:
    # In a process of its own: a process's niceness cannot be raised back.
    before = os.nice(0)
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    settings = load_settings(env={"COFFEEBUS_PROCESS__NICE": "10"}).process
    child = ctx.Process(target=_niceness_after, args=(settings, theirs))
    child.start()
    try:
        assert mine.poll(60)
        assert mine.recv() == min(before + 10, 19)
    finally:
        child.join(10)
    assert os.nice(0) == before


@pytest.mark.parametrize("value", ["-1", "20"])
def test_a_niceness_outside_0_to_19_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="nice"):
        load_settings(env={"COFFEEBUS_PROCESS__NICE": value})
