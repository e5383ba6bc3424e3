"""``make fuzz``: a bounded run of a million or more hostile inputs against the frame codec
and the connection core (`tests.security.fuzzing` has the families and the property).

Two phases, each bounded in inputs *and* time:

1. the seeded structured generator (`random_case`): every input through `check_case`, and
   every 16th also through `check_decoder`;
2. atheris (coverage-guided libFuzzer mutations of raw bytes, `tests.security.
   fuzz_atheris`), in a child process: libFuzzer exits when done, and the child must
   import the fuzzed modules under instrumentation before anything else imports them.

A failing input stops the run with its seed (phase 1) or libFuzzer's crash file (phase 2)
and a non-zero exit. The last line is the total::

    fuzz: inputs=1234567 seconds=321.0 failures=0

Usage: ``python -m tests.security.fuzz_run [--inputs N] [--seconds S] [--atheris-inputs N]
[--atheris-seconds S] [--seed N]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import random
import re
import subprocess
import sys
import time
import traceback
from collections import Counter

from tests.security.fuzzing import check_case, check_decoder, random_case

_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


def run_generator(inputs: int, seconds: float, seed: int) -> tuple[int, float, Counter[str]]:
    """Phase 1; returns (inputs run, seconds taken, close reasons seen)."""
    rnd = random.Random(seed)
    reasons: Counter[str] = Counter()
    start = time.perf_counter()
    done = 0
    while done < inputs and time.perf_counter() - start < seconds:
        case_seed = rnd.getrandbits(64)
        case = random_case(random.Random(case_seed))
        try:
            outcome = check_case(case)
            if done % 16 == 0:
                data = b"".join(case.chunks)
                check_decoder(data, [len(c) for c in case.chunks])
        except Exception:
            traceback.print_exc()
            print(f"fuzz: FAILED input {done} (case seed {case_seed}): {case!r}", flush=True)
            raise SystemExit(1) from None
        reasons[outcome.closed.value if outcome.closed else "open"] += 1
        done += 1
        if done % 100_000 == 0:
            rate = done / (time.perf_counter() - start)
            print(f"fuzz: generator {done} inputs ({rate:.0f}/s)", flush=True)
    return done, time.perf_counter() - start, reasons


def run_atheris(inputs: int, seconds: int) -> tuple[int, float] | None:
    """Phase 2 in a child process; None when atheris is not installed."""
    if importlib.util.find_spec("atheris") is None:
        print("fuzz: atheris not installed, phase 2 skipped", flush=True)
        return None
    start = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-m", "tests.security.fuzz_atheris", str(inputs), str(seconds)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    took = time.perf_counter() - start
    done = _DONE.search(child.stderr)
    if child.returncode != 0 or done is None:
        print(child.stderr[-4000:], file=sys.stderr)
        print(f"fuzz: atheris FAILED (exit {child.returncode})", flush=True)
        raise SystemExit(1)
    return int(done.group(1)), took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=450.0)
    parser.add_argument("--atheris-inputs", type=int, default=300_000)
    parser.add_argument("--atheris-seconds", type=int, default=120)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    args = parser.parse_args()
    # The core logs every protocol error; a million of them would be the run's cost.
    logging.disable(logging.CRITICAL)
    print(f"fuzz: phase 1, structured generator, seed {args.seed}", flush=True)
    done, took, reasons = run_generator(args.inputs, args.seconds, args.seed)
    print(f"fuzz: generator inputs={done} seconds={took:.1f} outcomes={dict(reasons)}", flush=True)
    total, total_s = done, took
    if args.atheris_inputs > 0:
        print("fuzz: phase 2, atheris (libFuzzer, coverage-guided)", flush=True)
        result = run_atheris(args.atheris_inputs, args.atheris_seconds)
        if result is not None:
            print(f"fuzz: atheris inputs={result[0]} seconds={result[1]:.1f}", flush=True)
            total, total_s = total + result[0], total_s + result[1]
    print(f"fuzz: inputs={total} seconds={total_s:.1f} failures=0", flush=True)


if __name__ == "__main__":
    main()
