"""The bus stands below the stores: importing it loads no store and no store driver."""

from __future__ import annotations

from tests.fresh import fresh_python


def test_the_bus_imports_neither_the_stores_nor_their_drivers() -> None:
    code = (
        "import sys\n"
        "import bus.admin, bus.base, bus.kafka, bus.memory, bus.runner, bus.topology\n"
        "import bus.transient\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pymongo', 'redis', 'store'}))\n"
    )
    out = fresh_python(code)
    assert out.strip() == "[]"
