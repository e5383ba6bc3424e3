"""Vendor the web demo's browser libraries from npm: protobuf.js and long.js.

The page (`producers.demo`) loads them as plain scripts from ``producers/static/demo/vendor/``,
so the API serves them with no JavaScript toolchain at run time. Their versions are pinned
by ``producers/static/package.json`` and ``package-lock.json``; this script installs exactly
those with ``npm ci`` in a temporary directory, copies the browser builds and their licences
into ``vendor/``, and writes ``vendor/MANIFEST.json`` (package, version, source path, SHA-256
of every file).

    uv run python -m producers.demo_vendor          # re-vendor (make demo-vendor); needs npm
    uv run python -m producers.demo_vendor --check  # offline: vendor/ matches the lock file

`check` is what the tests run: a vendored file edited by hand, or a lock file bumped without
re-vendoring, fails it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

import msgspec

__all__ = ["MANIFEST", "NPM_DIR", "VENDOR_DIR", "VendoredFile", "check", "vendor"]

NPM_DIR: Final = Path(__file__).resolve().parent / "static"
VENDOR_DIR: Final = NPM_DIR / "demo" / "vendor"
MANIFEST: Final = VENDOR_DIR / "MANIFEST.json"


class VendoredFile(msgspec.Struct, frozen=True):
    """One file of ``vendor/``: where in which npm package it comes from."""

    package: str
    version: str
    source: str  # path inside the package
    sha256: str


#: vendor/ file name -> (npm package, path inside it). long.js first: protobuf.js looks for
#: the global Long when it loads (index.html loads them in this order).
FILES: Final[dict[str, tuple[str, str]]] = {
    "long.js": ("long", "umd/index.js"),
    "long.LICENSE": ("long", "LICENSE"),
    "protobuf.min.js": ("protobufjs", "dist/protobuf.min.js"),
    "protobuf.LICENSE": ("protobufjs", "LICENSE"),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def locked_versions(npm_dir: Path = NPM_DIR) -> dict[str, str]:
    """Package name -> version, from ``package-lock.json``."""
    lock = json.loads((npm_dir / "package-lock.json").read_text())
    return {
        path.removeprefix("node_modules/"): entry["version"]
        for path, entry in lock["packages"].items()
        if path.startswith("node_modules/")
    }


def vendor(npm_dir: Path = NPM_DIR, vendor_dir: Path = VENDOR_DIR) -> dict[str, VendoredFile]:
    """Install the locked packages with npm and copy `FILES` into `vendor_dir`."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (Debian: apt-get install npm)")
    with tempfile.TemporaryDirectory(prefix="coffeebus-demo-vendor-") as tmp:
        work = Path(tmp)
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(npm_dir / name, work / name)
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=work,
            check=True,
        )
        vendor_dir.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, VendoredFile] = {}
        for name, (package, source) in FILES.items():
            package_dir = work / "node_modules" / package
            version = json.loads((package_dir / "package.json").read_text())["version"]
            target = vendor_dir / name
            shutil.copyfile(package_dir / source, target)
            manifest[name] = VendoredFile(package, version, source, _sha256(target))
    (vendor_dir / MANIFEST.name).write_bytes(
        msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"
    )
    return manifest


def check(npm_dir: Path = NPM_DIR, vendor_dir: Path = VENDOR_DIR) -> list[str]:
    """What is wrong with `vendor_dir` against the lock file (empty: nothing)."""
    path = vendor_dir / MANIFEST.name
    if not path.exists():
        return [f"{path} is missing"]
    manifest = msgspec.json.decode(path.read_bytes(), type=dict[str, VendoredFile])
    locked = locked_versions(npm_dir)
    problems = []
    if set(manifest) != set(FILES):
        problems.append(f"the manifest lists {sorted(manifest)}, expected {sorted(FILES)}")
    for name, entry in manifest.items():
        file = vendor_dir / name
        if (entry.package, entry.source) != FILES.get(name):
            problems.append(f"{name}: from {entry.package}/{entry.source}, not as FILES says")
        if locked.get(entry.package) != entry.version:
            problems.append(
                f"{name}: {entry.package} {entry.version} vendored, "
                f"{locked.get(entry.package)} locked"
            )
        if not file.exists():
            problems.append(f"{name}: missing")
        elif _sha256(file) != entry.sha256:
            problems.append(f"{name}: changed since it was vendored")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m producers.demo_vendor",
        description="Vendor protobuf.js and long.js for the web demo from the npm lock file.",
    )
    parser.add_argument(
        "--check", action="store_true", help="only check vendor/ against the lock (no network)"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(f"demo vendor: {problem}", file=sys.stderr)
        if problems:
            print("demo vendor: run `make demo-vendor` and commit the result", file=sys.stderr)
        return 1 if problems else 0
    for name, entry in vendor().items():
        print(f"{VENDOR_DIR / name}: {entry.package} {entry.version} {entry.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
