"""The committed generated code in schemas/pb is exactly what schemas/generate.py produces."""

from __future__ import annotations

import importlib
from pathlib import Path

from schemas.generate import PB_DIR, PB_PACKAGE, REGENERATE_COMMAND, generate


def _tree(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(root.rglob("*"))
        if path.suffix in {".py", ".pyi"}
    }


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh, committed = _tree(tmp_path), _tree(PB_DIR)
    missing = sorted(fresh.keys() - committed.keys())
    extra = sorted(committed.keys() - fresh.keys())
    changed = sorted(k for k in fresh.keys() & committed.keys() if fresh[k] != committed[k])
    stale = missing or extra or changed
    assert not stale, (
        f"schemas/pb is stale (missing {missing}, extra {extra}, changed {changed}); "
        f"regenerate with: {REGENERATE_COMMAND}"
    )


def test_generated_modules_import_inside_the_package() -> None:
    # The rewritten imports resolve without schemas/pb on sys.path, and classes know
    # their real module (pickling and reprs depend on it).
    for rel in sorted(_tree(PB_DIR)):
        if rel.endswith("_pb2.py"):
            name = f"{PB_PACKAGE}.{rel.removesuffix('.py').replace('/', '.')}"
            module = importlib.import_module(name)
            for descriptor in module.DESCRIPTOR.message_types_by_name.values():
                assert getattr(module, descriptor.name).__module__ == name
