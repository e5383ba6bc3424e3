"""Phase 2 of ``make fuzz``: atheris (libFuzzer) over the frame codec and connection core.

Run as ``python -m tests.security.fuzz_atheris RUNS SECONDS`` (by `tests.security.fuzz_run`).
The fuzzed modules are imported under `atheris.instrument_imports` before anything else
imports them, so libFuzzer is guided by their branch coverage. Each input's bytes become a
`Case` (the first byte chooses transport, login, clock steps and timers; the next four
choose split points) and go through the same property as the other engines. libFuzzer
prints ``Done N runs in S second(s)`` and exits; a failure leaves a ``crash-*`` file.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["schemas", "gateway"]):
    from tests.security.fuzzing import Case, check_case, check_decoder


def case_from_bytes(data: bytes) -> tuple[Case, list[int]]:
    """Any bytes as a `Case`, and split points for `check_decoder`."""
    if not data:
        return Case((b"",)), []
    flags, rest = data[0], data[1:]
    cuts = sorted({b * 7 % (len(rest) + 1) for b in rest[:4]} if flags & 8 else set())
    bounds = [0, *cuts, len(rest)]
    chunks = tuple(rest[a:b] for a, b in itertools.pairwise(bounds))
    case = Case(
        chunks or (b"",),
        ws=bool(flags & 1),
        logged_in=not flags & 2,
        steps=((0.0, 0.001, 20.0, 200.0)[(flags >> 4) & 3],),
        timers=bool(flags & 4),
    )
    return case, cuts


def one_input(data: bytes) -> None:
    """libFuzzer's target: the property of `tests.security.fuzzing` on one input."""
    case, cuts = case_from_bytes(data)
    check_case(case)
    check_decoder(data[1:], cuts)


def main() -> None:
    runs, seconds = int(sys.argv[1]), int(sys.argv[2])
    logging.disable(logging.CRITICAL)  # every protocol error is logged by the core
    argv = [sys.argv[0], f"-runs={runs}", f"-max_total_time={seconds}", "-max_len=4096"]
    corpus = os.environ.get("COFFEEBUS_FUZZ_CORPUS", "")
    if corpus:
        argv.append(corpus)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
