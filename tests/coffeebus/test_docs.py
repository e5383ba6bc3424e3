"""The operator and integrator docs match the code: every setting is documented, and every
`coffeebus` command line, setting name and environment variable they mention is real."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bus.topology import load_topology
from coffeebus import settingsdoc
from coffeebus.cli import build_parser
from coffeebus.settings import Settings
from schemas import webhooks

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "docs" / "operations.md", REPO / "docs" / "integration.md"]


def setting_names() -> list[str]:
    names = []
    for section, struct in zip(
        Settings.__struct_fields__, msgspec.structs.fields(Settings), strict=True
    ):
        fields = struct.default.__struct_fields__
        names += [f"{section}.{field}" for field in fields]
    return names


def test_every_setting_is_in_the_operations_reference() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_]+\.[a-z0-9_]+)` \|", text, flags=re.MULTILINE))
    assert rows == set(setting_names())
    for name in setting_names():
        section, field = name.split(".")
        assert f"`COFFEEBUS_{section.upper()}__{field.upper()}`" in text


def test_the_settings_tables_are_generated_from_the_code() -> None:
    """docs/operations.md's tables are `python -m coffeebus.settingsdoc`'s output (`make docs`):
    a setting added, renamed, re-defaulted or re-described in its settings module without
    regenerating the page fails here."""
    page = settingsdoc.PAGE.read_text(encoding="utf-8")
    assert settingsdoc.update_page(page) == page, "stale: run `make docs` and commit the page"
    # Every row says what the setting is for (a `||` row would render an empty "what").
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert rows
    assert not [row for row in rows if "||" in row or row.endswith("|  |")]


def test_a_setting_without_a_description_cannot_be_generated() -> None:
    class Undocumented(msgspec.Struct):
        #: documented
        a: int = 1
        b: int = 2

    assert settingsdoc.field_comments(Undocumented) == {"a": "documented"}


def command_lines(path: Path) -> list[str]:
    """`coffeebus ...` lines of the shell blocks of `path`, comments removed."""
    lines: list[str] = []
    in_shell = False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_shell = stripped in ("```sh", "```bash", "```console")
            continue
        command = stripped.removeprefix("uv run ")
        if in_shell and command.startswith("coffeebus "):
            lines.append(command.split("  #")[0].split(" # ")[0].strip())
    return lines


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_documented_command_line_parses(path: Path) -> None:
    commands = command_lines(path)
    # The integration guide's shell blocks are curl calls; the others show the CLI.
    assert commands or path.name == "integration.md", f"{path.name} shows no coffeebus command"
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command)[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{path.name}: `{command}` does not parse (exit {exc.code})")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_mentioned_setting_and_variable_exists(path: Path) -> None:
    text = path.read_text()
    known = set(setting_names())
    sections = set(Settings.__struct_fields__)
    for section, field in re.findall(r"\bCOFFEEBUS_([A-Z]+)__([A-Z0-9_]+)\b", text):
        if field == "FIELD" or section == "SECTION":
            continue  # the pattern itself
        assert f"{section.lower()}.{field.lower()}" in known, f"COFFEEBUS_{section}__{field}"
    topology = load_topology()
    for section, field in re.findall(r"`([a-z]+)\.([a-z0-9_]+)`", text):
        if section in sections and not topology.declared(f"{section}.{field}"):
            assert f"{section}.{field}" in known, f"{section}.{field} in {path.name}"


def python_block(path: Path, defines: str) -> str:
    """The ```python block of `path` that defines `defines`."""
    blocks: list[str] = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)
    [block] = [b for b in blocks if f"def {defines}(" in b]
    return block


def test_the_integration_guides_signature_check_accepts_coffeebus_signatures() -> None:
    namespace: dict[str, Any] = {}
    exec(python_block(REPO / "docs" / "integration.md", "verify_coffeebus_signature"), namespace)
    verify = namespace["verify_coffeebus_signature"]
    secret, body, now = b"s3cret", b'{"type":"message.stored"}', int(time.time())
    header = webhooks.signature_header(secret, now, body)
    assert verify(secret, str(now), header, body)
    assert verify(secret, str(now), f"v1={'0' * 64}, {header}", body)  # rotation
    assert not verify(b"other", str(now), header, body)
    assert not verify(secret, str(now), header, body + b" ")
    assert not verify(
        secret, str(now - 301), webhooks.signature_header(secret, now - 301, body), body
    )
    assert not verify(secret, "soon", header, body)
    assert webhooks.verify(secret, str(now), header, body)  # the same check as the code's
