"""`coffeebus` is the composition root: it imports the roles, and nothing below imports it.

docs/architecture.md ("Layout and dependency direction") draws `coffeebus` (the CLI, the
settings file, the wiring) at the top of the import graph. Two checks keep it there: the
source of every module below is read for an import of `coffeebus` anywhere in it (under
``TYPE_CHECKING``, inside a function, relative or by `importlib`), and a fresh interpreter
importing the roles shows that no `coffeebus` module was loaded.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.fresh import fresh_python

ROOT = Path(__file__).resolve().parents[2]
#: Every package below the composition root.
BELOW = ("schemas", "telemetry", "bus", "store", "gateway", "consumers", "producers", "sdk")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, is_package: bool, node: ast.AST) -> list[str]:
    """The absolute module names `node` imports (empty for other nodes)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level == 0:
            return [node.module or ""]
        package = module.split(".")
        base = package if is_package else package[:-1]
        base = base[: len(base) - (node.level - 1)]
        return [".".join([*base, node.module] if node.module else base)]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
        in ("import_module", "__import__")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def imports_of_the_root(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Lines ``<line>: <imported module>`` of `source` (module `module`) importing `coffeebus`."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        for name in _imported(module, is_package, node):
            if name == "coffeebus" or name.startswith("coffeebus."):
                found.append(f"{getattr(node, 'lineno', 0)}: {name}")
    return found


def test_no_package_below_the_root_imports_it() -> None:
    offenders: list[str] = []
    files = [p for package in BELOW for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 100, "the packages below the root were not found"
    for path in files:
        module = _module_name(path)
        source = path.read_text(encoding="utf-8")
        for hit in imports_of_the_root(source, module, is_package=path.name == "__init__.py"):
            offenders.append(f"{path.relative_to(ROOT)}:{hit}")
    assert not offenders, (
        "these modules import the composition root; take what they need from their own "
        "package (e.g. gateway.settings, consumers.runtime) or from schemas.settings:\n"
        + "\n".join(offenders)
    )


@pytest.mark.parametrize(
    "source",
    [
        "from coffeebus.settings import ApiSettings\n",
        "import coffeebus.wiring\n",
        "import coffeebus\n",
        "from coffeebus import settings\n",
        "if TYPE_CHECKING:\n    from coffeebus.wiring import Runtime\n",
        "def build():\n    from coffeebus.wiring import Runtime\n",
        "import importlib\nimportlib.import_module('coffeebus.roles')\n",
    ],
)
def test_the_check_sees_every_way_of_importing_the_root(source: str) -> None:
    assert imports_of_the_root(source, "consumers.msg")


def test_the_check_resolves_relative_imports() -> None:
    # `from .. import x` in a module `a.b` reaches the top level: not the root package.
    assert imports_of_the_root("from ..bus import base\n", "consumers.msg") == []
    assert imports_of_the_root("from . import settings\n", "consumers.msg") == []
    # and names the root when it is where it lands
    assert imports_of_the_root("from . import wiring\n", "coffeebus.x") == ["1: coffeebus"]


def test_the_check_leaves_other_names_alone() -> None:
    source = (
        "from schemas.pb.coffeebus import ext_pb2\n"
        "import coffeebus_plugin\n"
        "X = 'coffeebus.settings'\n"
    )
    assert imports_of_the_root(source, "gateway.core") == []


def test_importing_every_role_loads_no_module_of_the_root() -> None:
    code = (
        "import sys\n"
        "import gateway.server, gateway.settings, producers.app, producers.settings\n"
        "import consumers.settings, consumers.runtime, consumers.registry\n"
        "from consumers.registry import GROUP_MODULES, factory\n"
        "for group in GROUP_MODULES: factory(group)\n"
        "print(sorted(m for m in sys.modules if m == 'coffeebus' or m.startswith('coffeebus.')))\n"
    )
    assert fresh_python(code).strip() == "[]"
