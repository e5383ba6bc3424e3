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

Usage: ``python -m tests.security.fuzz_run [--inputs N] [--seconds S] [--jobs N]
[--atheris-inputs N] [--atheris-seconds S] [--seed N]`` (phase 1 runs on ``--jobs``
processes, one per core by default, each with its own seed).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import multiprocessing
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


def run_generator(
    inputs: int, seconds: float, seed: int
) -> tuple[int, float, Counter[str], str | None]:
    """Phase 1 (one worker); returns (inputs run, seconds taken, close reasons seen, the
    failing input or None)."""
    logging.disable(logging.CRITICAL)  # in each worker: the core logs every protocol error
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
            failure = f"{traceback.format_exc()}case seed {case_seed}: {case!r}"
            return done, time.perf_counter() - start, reasons, failure
        reasons[outcome.closed.value if outcome.closed else "open"] += 1
        done += 1
        if done % 100_000 == 0:
            rate = done / (time.perf_counter() - start)
            print(f"fuzz: generator {done} inputs ({rate:.0f}/s)", flush=True)
    return done, time.perf_counter() - start, reasons, None


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
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    args = parser.parse_args()
    # The core logs every protocol error; a million of them would be the run's cost.
    logging.disable(logging.CRITICAL)
    print(f"fuzz: phase 1, structured generator, seed {args.seed}, {args.jobs} jobs", flush=True)
    start = time.perf_counter()
    share = -(-args.inputs // args.jobs)
    work = [(share, args.seconds, args.seed + job) for job in range(args.jobs)]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.starmap(run_generator, work)
    took = time.perf_counter() - start
    done = sum(r[0] for r in results)
    reasons = sum((r[2] for r in results), Counter[str]())
    for failure in (r[3] for r in results if r[3] is not None):
        print(f"fuzz: FAILED after {done} inputs\n{failure}", flush=True)
        raise SystemExit(1)
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
