"""Every consumer group of topology.yaml has a module, and every module a declared group."""

from __future__ import annotations

from bus.topology import load_topology
from consumers.registry import GROUP_MODULES, factory


def test_registry_and_topology_name_the_same_groups() -> None:
    assert set(GROUP_MODULES) == set(load_topology().groups)


def test_every_group_module_registers_its_factory() -> None:
    for name in GROUP_MODULES:
        assert callable(factory(name))
