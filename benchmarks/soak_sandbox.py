"""Soak the code verifier: N programs (default 10,000) through one sandbox pool, resources at start and end.

Usage: python benchmarks/soak_sandbox.py [--programs 10000] [--workers 2]

The programs are a mix a policy produces: right and wrong solutions, exceptions, early exits, forks that
leave children behind, files and directories in the temp dir, loud output. Reported at start (after a
warm-up) and at the end: RSS of this process and of the pool's workers, this process's open descriptors,
and processes left over in the programs' uid range. Goals: RSS growth < 50 MB, descriptors flat, no
leftovers. Prints one ``soak:`` line per figure and exits non-zero when a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from rlvr.domains.code.verify import judge_code_batch
from rlvr.domains.format import format_answer
from rlvr.sandbox.pool import SandboxPool

REF = {"tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]}
PROGRAMS = [
    "def add(a, b):\n    return a + b",
    "def add(a, b):\n    return a - b",
    "def add(a, b):\n    raise ValueError(a)",
    "import sys\nsys.exit(0)",
    "import os\ndef add(a, b):\n    if os.fork() == 0:\n        os.setsid()\n        import time; time.sleep(30)\n    return a + b",
    "import os\nfor i in range(50):\n    open(f'f{i}', 'w').write('x' * 1000)\nos.makedirs('a/b/c')\ndef add(a, b):\n    return a + b",
    "print('x' * 100_000)\ndef add(a, b):\n    return a + b",
    "class X:\n    def __eq__(self, o): return True\ndef add(a, b):\n    return X()",
]


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def tasks_of_uids(uids: range) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid in uids:
                    n += 1
            except OSError:
                pass
    return n


def snapshot(pool: SandboxPool) -> dict[str, int]:
    workers = [w.proc.pid for w in pool._all if w.proc is not None]
    return {
        "rss_kb": rss_kb(os.getpid()),
        "worker_rss_kb": sum(rss_kb(p) for p in workers),
        "fds": len(os.listdir("/proc/self/fd")),
        "leftovers": tasks_of_uids(range(64000, 64000 + pool.workers)),
    }


def soak(n: int, workers: int) -> tuple[dict, dict, float, int]:
    completions = [format_answer("r", f"```python\n{p}\n```") for p in PROGRAMS]
    with SandboxPool(workers) as pool:
        judge_code_batch(completions * 4, [REF] * len(completions) * 4, pool=pool)  # warm-up
        time.sleep(0.5)
        start = snapshot(pool)
        t0, done, correct = time.perf_counter(), 0, 0
        while done < n:
            k = min(200, n - done)
            batch = [completions[(done + i) % len(completions)] for i in range(k)]
            correct += sum(j.verdict == "correct" for j in judge_code_batch(batch, [REF] * k, pool=pool))
            done += k
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)
        end = snapshot(pool)
    return start, end, elapsed, correct


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    start, end, elapsed, correct = soak(args.programs, args.workers)
    growth_mb = (end["rss_kb"] - start["rss_kb"]) / 1024
    print(f"soak: {args.programs} programs in {elapsed:.1f} s ({args.programs / elapsed:.0f} programs/s), "
          f"{correct} correct (expected {sum(1 for i in range(args.programs) if i % len(PROGRAMS) in (0, 4, 5, 6))})")  # fmt: skip
    for key in start:
        print(f"soak: {key:<14} start {start[key]:>9}  end {end[key]:>9}")
    ok = growth_mb < 50 and end["fds"] <= start["fds"] and end["leftovers"] == 0
    print(
        f"soak: RSS growth {growth_mb:.1f} MB (goal < 50), fds {start['fds']} -> {end['fds']} (flat), "
        f"leftover processes {end['leftovers']} (goal 0): {'OK' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
