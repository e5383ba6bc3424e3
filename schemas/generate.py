"""Compile `schemas/proto/**/*.proto` into the committed Python package `schemas/pb/`.

Run it as ``uv run python -m schemas.generate`` (``make proto``). A test regenerates into a
temporary directory and fails when the committed code differs, so edit a `.proto`, run this,
and commit both.

The compiler is the protoc bundled with grpcio-tools, pinned by the lock file; the expected
versions are written below so that a different toolchain fails loudly instead of producing
subtly different code. The ``.pyi`` stubs come from mypy-protobuf.

protoc names Python modules after the proto *source* paths: ``-I schemas/proto`` makes
``coffeechat/login.proto`` import ``from coffeechat import base_pb2``, which only resolves if
``schemas/pb`` is on ``sys.path``. Moving the sources under a ``schemas/pb/`` include root
would fix the Python imports but bake ``schemas/pb/...`` into every descriptor's file name
(and into the ``import`` lines of the .proto files other languages compile). So the sources
keep their clean names and this script rewrites the generated absolute imports — and the
module name protoc passes to the descriptor builder, which becomes each class's
``__module__`` — to live under ``schemas.pb``. Every rewrite is exact and counted: an
unexpected shape of generated code is an error, not a silent miss.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

__all__ = [
    "MYPY_PROTOBUF_VERSION",
    "PB_DIR",
    "PB_PACKAGE",
    "PROTOC_VERSION",
    "PROTO_DIR",
    "GenerateError",
    "generate",
    "main",
]

SCHEMAS_DIR = Path(__file__).resolve().parent
PROTO_DIR = SCHEMAS_DIR / "proto"
PB_DIR = SCHEMAS_DIR / "pb"
PB_PACKAGE = "schemas.pb"

#: ``protoc --version`` of the grpcio-tools in uv.lock (grpcio-tools 1.85.1 bundles 35.1).
PROTOC_VERSION = "libprotoc 35.1"
#: mypy-protobuf in uv.lock.
MYPY_PROTOBUF_VERSION = "5.1.0"

REGENERATE_COMMAND = "make proto (uv run python -m schemas.generate)"

_HEADER = "# Generated from schemas/proto by schemas/generate.py (make proto). Do not edit.\n"


class GenerateError(RuntimeError):
    """The toolchain is not the pinned one, protoc failed, or its output was unexpected."""


def _check_toolchain() -> list[str]:
    """Return the protoc command line prefix after checking the pinned versions."""
    protoc = [sys.executable, "-m", "grpc_tools.protoc"]
    found = subprocess.run(
        [*protoc, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if found != PROTOC_VERSION:
        raise GenerateError(
            f"protoc is {found!r}, expected {PROTOC_VERSION!r}: sync the environment "
            "(uv sync) or, after a deliberate upgrade of grpcio-tools, update "
            "PROTOC_VERSION in schemas/generate.py and regenerate"
        )
    mypy_protobuf = version("mypy-protobuf")
    if mypy_protobuf != MYPY_PROTOBUF_VERSION:
        raise GenerateError(
            f"mypy-protobuf is {mypy_protobuf}, expected {MYPY_PROTOBUF_VERSION}: sync the "
            "environment (uv sync) or update MYPY_PROTOBUF_VERSION and regenerate"
        )
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    if not plugin.exists():
        found_plugin = shutil.which("protoc-gen-mypy")
        if found_plugin is None:
            raise GenerateError("protoc-gen-mypy (mypy-protobuf) is not installed")
        plugin = Path(found_plugin)
    return [*protoc, f"--plugin=protoc-gen-mypy={plugin}"]


def _proto_files() -> list[str]:
    files = sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))
    if not files:
        raise GenerateError(f"no .proto files under {PROTO_DIR}")
    return files


def _rewrite(text: str, *, packages: set[str], module: str, stub: bool) -> str:
    """Point the generated imports of our own proto packages into `schemas.pb`."""
    names = "|".join(sorted(map(re.escape, packages)))
    # `from coffeechat import base_pb2 as ...` (both the .py and the mypy-protobuf .pyi).
    import_re = re.compile(rf"^from ({names}) import (\w+_pb2)\b", re.MULTILINE)
    text, _ = import_re.subn(rf"from {PB_PACKAGE}.\1 import \2", text)
    if re.search(rf"^(from|import) ({names})\b", text, re.MULTILINE):
        raise GenerateError(f"{module}: an import of our packages was left unrewritten")
    if not stub:
        builder_re = re.compile(
            rf"BuildTopDescriptorsAndMessages\(DESCRIPTOR, '{re.escape(module)}', _globals\)"
        )
        text, count = builder_re.subn(
            f"BuildTopDescriptorsAndMessages(DESCRIPTOR, '{PB_PACKAGE}.{module}', _globals)",
            text,
        )
        if count != 1:
            raise GenerateError(f"{module}: descriptor builder call not found")
    return _HEADER + text


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto into `out_dir` (laid out like `schemas/pb/`); return the files.

    Generated modules in `out_dir` that no .proto produces any more are deleted, so files of
    removed protos do not linger.
    """
    protoc = _check_toolchain()
    protos = _proto_files()
    packages = {name.split("/", 1)[0] for name in protos}
    with tempfile.TemporaryDirectory(prefix="coffeebus-protoc-") as raw:
        raw_dir = Path(raw)
        result = subprocess.run(
            [
                *protoc,
                f"--proto_path={PROTO_DIR}",
                f"--python_out={raw_dir}",
                f"--mypy_out={raw_dir}",
                "--fatal_warnings",
                *protos,
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=PROTO_DIR,
        )
        if result.returncode != 0:
            raise GenerateError(f"protoc failed:\n{result.stderr}")
        generated: dict[Path, str] = {}
        for path in sorted(raw_dir.rglob("*_pb2.py*")):
            rel = path.relative_to(raw_dir)
            module = ".".join(rel.with_suffix("").parts)
            generated[rel] = _rewrite(
                path.read_text(encoding="utf-8"),
                packages=packages,
                module=module,
                stub=path.suffix == ".pyi",
            )
    generated[Path("__init__.py")] = '"""Generated protobuf modules (see schemas/generate.py)."""\n'
    for package in sorted(packages):
        generated[Path(package, "__init__.py")] = (
            f'"""Generated from schemas/proto/{package}/ (see schemas/generate.py)."""\n'
        )

    if out_dir.exists():
        # Only protoc's own file names are ever deleted, whatever directory --out names.
        for pattern in ("*_pb2.py", "*_pb2.pyi"):
            for old in out_dir.rglob(pattern):
                if old.relative_to(out_dir) not in generated:
                    old.unlink()
    written = []
    for rel, text in sorted(generated.items()):
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # Leave unchanged files untouched so their mtimes (and bytecode caches) survive.
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line entry: regenerate `schemas/pb/` (or `--out DIR`)."""
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__)
    parser.add_argument("--out", type=Path, default=PB_DIR, help="output directory")
    args = parser.parse_args(argv)
    try:
        files = generate(args.out)
    except GenerateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(files)} files under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
