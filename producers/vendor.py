"""Vendor the browser libraries CoffeeBus serves itself, from npm.

The API serves every byte its pages load, so they work on a machine that reaches nothing
outside (docs/web-demo.md, docs/api.md):

- the web demo (`producers.demo`) loads protobuf.js and long.js from
  ``producers/static/demo/vendor/``;
- the API docs at ``/schema`` (`producers.apidocs`) load ReDoc from
  ``producers/static/apidocs/vendor/``.

Their versions are pinned by ``producers/static/package.json`` and ``package-lock.json``;
this script installs exactly those with ``npm ci`` in a temporary directory, copies the
browser builds and their licences into each ``vendor/`` directory, and writes its
``MANIFEST.json`` (package, version, source path, SHA-256 of every file).

    uv run python -m producers.vendor          # re-vendor (make vendor); needs npm
    uv run python -m producers.vendor --check  # offline: vendor/ matches the lock file

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

__all__ = ["FILES", "NPM_DIR", "VendoredFile", "check", "vendor"]

NPM_DIR: Final = Path(__file__).resolve().parent / "static"
MANIFEST_NAME: Final = "MANIFEST.json"


class VendoredFile(msgspec.Struct, frozen=True):
    """One vendored file: where in which npm package it comes from."""

    package: str
    version: str
    source: str  # path inside the package
    sha256: str


#: vendor directory (relative to `NPM_DIR`) -> file name -> (npm package, path inside it).
FILES: Final[dict[str, dict[str, tuple[str, str]]]] = {
    # long.js first: protobuf.js looks for the global Long when it loads (index.html loads
    # them in this order).
    "demo/vendor": {
        "long.js": ("long", "umd/index.js"),
        "long.LICENSE": ("long", "LICENSE"),
        "protobuf.min.js": ("protobufjs", "dist/protobuf.min.js"),
        "protobuf.LICENSE": ("protobufjs", "LICENSE"),
    },
    # The standalone build bundles React and everything else ReDoc needs: one script.
    "apidocs/vendor": {
        "redoc.standalone.js": ("redoc", "bundles/redoc.standalone.js"),
        "redoc.LICENSE": ("redoc", "LICENSE"),
    },
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def locked_versions(npm_dir: Path = NPM_DIR) -> dict[str, str]:
    """Package name -> version, from ``package-lock.json`` (top-level packages only)."""
    lock = json.loads((npm_dir / "package-lock.json").read_text())
    return {
        path.removeprefix("node_modules/"): entry["version"]
        for path, entry in lock["packages"].items()
        if path.startswith("node_modules/") and "/node_modules/" not in path
    }


def vendor(npm_dir: Path = NPM_DIR) -> dict[str, dict[str, VendoredFile]]:
    """Install the locked packages with npm and copy `FILES` into their directories."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (Debian: apt-get install npm)")
    manifests: dict[str, dict[str, VendoredFile]] = {}
    with tempfile.TemporaryDirectory(prefix="coffeebus-vendor-") as tmp:
        work = Path(tmp)
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(npm_dir / name, work / name)
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=work,
            check=True,
        )
        for directory, files in FILES.items():
            vendor_dir = npm_dir / directory
            vendor_dir.mkdir(parents=True, exist_ok=True)
            manifest: dict[str, VendoredFile] = {}
            for name, (package, source) in files.items():
                package_dir = work / "node_modules" / package
                version = json.loads((package_dir / "package.json").read_text())["version"]
                target = vendor_dir / name
                shutil.copyfile(package_dir / source, target)
                manifest[name] = VendoredFile(package, version, source, _sha256(target))
            (vendor_dir / MANIFEST_NAME).write_bytes(
                msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"
            )
            manifests[directory] = manifest
    return manifests


def check(npm_dir: Path = NPM_DIR) -> list[str]:
    """What is wrong with the vendor directories against the lock file (empty: nothing)."""
    locked = locked_versions(npm_dir)
    problems = []
    for directory, files in FILES.items():
        vendor_dir = npm_dir / directory
        path = vendor_dir / MANIFEST_NAME
        if not path.exists():
            problems.append(f"{path} is missing")
            continue
        manifest = msgspec.json.decode(path.read_bytes(), type=dict[str, VendoredFile])
        if set(manifest) != set(files):
            problems.append(
                f"{directory}: the manifest lists {sorted(manifest)}, expected {sorted(files)}"
            )
        for name, entry in manifest.items():
            file = vendor_dir / name
            label = f"{directory}/{name}"
            if (entry.package, entry.source) != files.get(name):
                problems.append(f"{label}: from {entry.package}/{entry.source}, not as FILES says")
            if locked.get(entry.package) != entry.version:
                problems.append(
                    f"{label}: {entry.package} {entry.version} vendored, "
                    f"{locked.get(entry.package)} locked"
                )
            if not file.exists():
                problems.append(f"{label}: missing")
            elif _sha256(file) != entry.sha256:
                problems.append(f"{label}: changed since it was vendored")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m producers.vendor",
        description="Vendor protobuf.js, long.js (web demo) and ReDoc (API docs) from the npm "
        "lock file.",
    )
    parser.add_argument(
        "--check", action="store_true", help="only check vendor/ against the lock (no network)"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(f"vendor: {problem}", file=sys.stderr)
        if problems:
            print("vendor: run `make vendor` and commit the result", file=sys.stderr)
        return 1 if problems else 0
    for directory, manifest in vendor().items():
        for name, entry in manifest.items():
            print(f"{NPM_DIR / directory / name}: {entry.package} {entry.version} {entry.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
