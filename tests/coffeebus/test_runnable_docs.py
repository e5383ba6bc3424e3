"""Every command block of the README and the operator and integrator docs runs as written.

Each ```sh, ```bash or ```console block of `PAGES` carries a marker on the line above it:

- ``<!-- runnable -->``: the page's runnable blocks run top to bottom in one bash (so a
  variable set in one block is there in the next) against a fresh embedded `coffeebus run`;
- ``<!-- runnable: kafka -->``: the same, with a Kafka broker of the test's own whose topics
  are applied (`KAFKA_BOOTSTRAP_SERVERS`);
- ``<!-- not runnable: REASON -->``: the documented exception — it starts a long-running
  process, is interactive, or needs more than one machine has.

A block without a marker fails the test, so no block is left out by accident. The commands
run exactly as printed, with two differences a reader would not notice: the server listens
on free ports, which replace the documented defaults (`127.0.0.1:18080`, `:8000`, `:8001`,
and `:9100` for the metrics listener), and `curl` fails on any answer that is not 2xx
(``--fail-with-body``). Any non-zero exit fails the test and shows the block, its line and
the output.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.coffeebus.conftest import REPO, free_port
from tests.coffeebus.test_run import Running, StartRun, start_run

__all__ = ["start_run"]  # the fixture

PAGES = [
    REPO / "README.md",
    REPO / "docs" / "integration.md",
    REPO / "docs" / "api.md",
    REPO / "docs" / "operations.md",
    REPO / "docs" / "observability.md",
]
SHELLS = ("sh", "bash", "console")
MARKER = re.compile(r"<!-- (runnable(?:: (kafka))?|not runnable: (.+?)) -->")
#: Documented defaults -> the test server's (see `addresses`).
DEFAULTS = {"api": 18080, "tcp": 8000, "ws": 8001, "metrics": 9100}
PREAMBLE = """\
set -euo pipefail
# As documented, but an answer that is not 2xx is a failure (and its body is shown).
curl() { command curl --fail-with-body --show-error "$@"; }
"""


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    text: str
    kind: str  # "embedded", "kafka" or "not runnable"
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    """The shell blocks of `page` with their markers; `ValueError` for an unmarked one."""
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped.startswith("```"):
            i += 1
            continue
        fence_line, language = i, stripped[3:].strip()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        i = end + 1
        if language not in SHELLS:
            continue
        indent = len(lines[fence_line]) - len(lines[fence_line].lstrip())
        body = "\n".join(line[indent:] for line in lines[fence_line + 1 : end])
        above = next(
            (lines[j].strip() for j in range(fence_line - 1, -1, -1) if lines[j].strip()), ""
        )
        marker = MARKER.fullmatch(above)
        where = f"{page.relative_to(REPO)}:{fence_line + 1}"
        if marker is None:
            raise ValueError(
                f"{where}: a ```{language} block without a marker above it: "
                "<!-- runnable -->, <!-- runnable: kafka --> or <!-- not runnable: REASON -->"
            )
        if marker[3]:
            yield Block(page, fence_line + 1, body, "not runnable", marker[3])
        else:
            yield Block(page, fence_line + 1, body, "kafka" if marker[2] else "embedded")


def test_every_shell_block_is_marked() -> None:
    found = [block for page in PAGES for block in blocks(page)]
    assert any(block.kind == "embedded" for block in found)
    runnable = {block.page for block in found if block.kind != "not runnable"}
    assert runnable == set(PAGES), "every page has commands to paste"


def addresses(ports: dict[str, int]) -> dict[str, str]:
    return {f"127.0.0.1:{DEFAULTS[name]}": f"127.0.0.1:{port}" for name, port in ports.items()}


def script(page_blocks: list[Block], ports: dict[str, int]) -> str:
    parts = [PREAMBLE]
    for block in page_blocks:
        text = block.text
        for documented, actual in addresses(ports).items():
            text = text.replace(documented, actual)
        # console blocks show a prompt: the command is what follows it
        if block.text.lstrip().startswith("$ "):
            text = "\n".join(line[2:] for line in text.splitlines() if line.startswith("$ "))
        parts.append(f'echo "::: block {block}" >&2\n{text}\n')
    return "\n".join(parts)


def run_blocks(page_blocks: list[Block], ports: dict[str, int], env: dict[str, str]) -> None:
    venv_bin = str(Path(sys.executable).parent)
    result = subprocess.run(
        ["bash", "-c", script(page_blocks, ports)],
        cwd=REPO,
        env={**os.environ, **env, "PATH": f"{venv_bin}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    for trouble in ("Traceback", "Unclosed", " ERROR "):
        assert trouble not in result.stderr, result.stderr[-4000:]
    if result.returncode != 0:
        failed = re.findall(r"::: block (\S+)", result.stderr)
        pytest.fail(
            f"block {failed[-1] if failed else '?'} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}",
            pytrace=False,
        )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
async def test_the_runnable_blocks_run_against_a_fresh_embedded_server(
    page: Path, start_run: StartRun
) -> None:
    page_blocks = [block for block in blocks(page) if block.kind == "embedded"]
    if not page_blocks:
        pytest.fail(f"{page.name} has no runnable block", pytrace=False)
    metrics = free_port()
    running: Running = await start_run(env={"COFFEEBUS_OBSERVABILITY__METRICS_PORT": str(metrics)})
    banner = running.banner
    ports = {
        "api": int(banner.api.rsplit(":", 1)[1]),
        "tcp": banner.tcp[1],
        "ws": banner.ws[1],
        "metrics": metrics,
    }
    try:
        run_blocks(page_blocks, ports, {})
    finally:
        assert await running.stop(signal.SIGINT) == 0


@pytest.mark.kafka
@pytest.mark.parametrize(
    "page", [p for p in PAGES if "runnable: kafka" in p.read_text()], ids=lambda p: p.name
)
def test_the_kafka_blocks_run_against_a_broker(page: Path, private_kafka: str) -> None:
    page_blocks = [block for block in blocks(page) if block.kind == "kafka"]
    env = {"KAFKA_BOOTSTRAP_SERVERS": private_kafka}
    applied = subprocess.run(
        [sys.executable, "-m", "coffeebus", "topology", "apply"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    run_blocks(page_blocks, {}, env)
