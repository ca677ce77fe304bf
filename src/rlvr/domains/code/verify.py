"""Score Python completions by running them against tests in the sandbox.

A reference is one of
  * HumanEval style: ``{"test": str, "entry_point": str, "prompt": str (optional)}`` — ``test`` defines
    ``check(candidate)``, run as ``check(<entry_point>)``: one unit, passed or not;
  * MBPP style: ``{"tests": [assert statements], "setup_code": str (optional)}`` — each assert is a unit.

The verdict never depends on code the candidate controls: the completion runs in one sandboxed process
and the tests in another that never executes it and only receives its results as plain data
(:mod:`rlvr.domains.code.harness`). The tester reports ``<nonce> <i> P|F|E`` per unit and ``<nonce> END``
on its own stdout; only units reported ``P`` count, and ``all_tests_pass`` also needs ``END``. A candidate
that exits early, patches builtins, returns an object equal to everything or looks for the tests in its
frames can only fail: its process holds neither the tests nor the expected values.
"""

from __future__ import annotations

import ast
import functools
import re
import secrets
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr.domains.base import CORRECT, Judgement
from rlvr.domains.code.harness import candidate_program, tester_names, tester_program
from rlvr.domains.format import extract_answer, extract_fenced, soft_format, strict_format
from rlvr.sandbox.pool import Limits, Result, SandboxPool, run_programs

CODE_COMPONENTS = (
    "strict_format",
    "soft_format",
    "code_extracted",
    "code_compiles",
    "tests_passed_fraction",
    "all_tests_pass",
)
#: verdicts of :func:`judge_code_batch` (``sandbox_error``: the sandbox failed, not the completion)
VERDICTS = ("no_code", "syntax_error", "runtime_error", "timeout", "wrong_answer", CORRECT, "sandbox_error")
#: verdict -> outcome category of the cross-benchmark error analysis (:data:`rlvr.eval.store.CATEGORIES`)
CATEGORY_OF_VERDICT = {
    CORRECT: "correct", "wrong_answer": "wrong_answer", "no_code": "no_answer", "syntax_error": "syntax_error",
    "runtime_error": "runtime_error", "timeout": "timeout", "sandbox_error": "runtime_error",
}  # fmt: skip


def category_of(verdict: str) -> str:
    """The outcome category of a :func:`judge_code_batch` verdict."""
    return CATEGORY_OF_VERDICT[verdict]


MAX_CODE_CHARS = 100_000  # longer "code" is not a solution; compiling it would only cost the trainer time


def extract_code(completion: str) -> str | None:
    """The program in a completion: the last ```python (or untagged) fence inside ``<answer>``, else the
    last such fence anywhere; ``None`` when there is none (or it is unterminated)."""
    answer = extract_answer(completion)
    code = extract_fenced(answer, "python") if answer is not None else None
    if code is None:
        code = extract_fenced(completion, "python")
    return code or None


def _defines(code: str, name: str) -> bool:
    return (
        re.search(rf"^[ \t]*(async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.MULTILINE) is not None
    )


@functools.lru_cache(maxsize=1024)  # the G completions of a prompt share it
def prompt_preamble(prompt: str, entry_point: str) -> str:
    """What a HumanEval prompt has before its entry-point ``def``: imports and helper functions."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return "\n".join(line for line in prompt.splitlines() if re.match(r"(import|from)\s", line)) + "\n"
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return "".join(prompt.splitlines(keepends=True)[: first - 1])
    return prompt


# Compiling a candidate raises the model's own SyntaxWarnings ("is" with a literal, invalid escapes): they
# are about generated text, not our code, and must not flood the trainer's console.
warnings.filterwarnings("ignore", category=SyntaxWarning, module="<candidate>")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="<candidate>")


def _compiles(source: str) -> bool:
    try:
        compile(source, "<candidate>", "exec", dont_inherit=True)
    except Exception:  # SyntaxError, ValueError (null bytes), RecursionError, MemoryError from the parser
        return False
    return True


def candidate_source(code: str, reference: Mapping[str, Any]) -> str:
    """The candidate module: ``code`` itself, or, for HumanEval references with a ``prompt``, the prompt's
    preamble + ``code`` when it defines the entry point, else prompt + ``code`` as the function body
    (re-indented when the fence stripped its indentation)."""
    prompt, entry = reference.get("prompt"), reference.get("entry_point")
    if not prompt or not entry:
        return code
    if _defines(code, entry):
        return prompt_preamble(prompt, entry) + code
    head = prompt if prompt.endswith("\n") else prompt + "\n"
    # a body whose fence lost the first line's indentation (the rest keeps it), or a body with none at all
    variants = [head + code, head + "    " + code, head + textwrap.indent(textwrap.dedent(code), "    ")]
    return next((v for v in variants if _compiles(v)), variants[0])


def reference_units(reference: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(module-level test code, unit sources) for a reference; raises ``ValueError`` on a malformed one."""
    setup = reference.get("setup_code") or ""
    if "tests" in reference:
        tests = list(reference["tests"])
        if not tests or not all(isinstance(t, str) for t in tests):
            raise ValueError("code reference 'tests' must be a non-empty list of assert statements")
        return setup, tests
    if "test" in reference and "entry_point" in reference:
        return setup + "\n" + reference["test"], [f"check({reference['entry_point']})"]
    raise ValueError(f"code reference needs 'tests' or 'test'+'entry_point'; has {sorted(reference)}")


def build_programs(candidate: str, reference: Mapping[str, Any], nonce: str) -> tuple[str, str]:
    """(candidate program, tester program) run paired in the sandbox (see :mod:`rlvr.domains.code.harness`).

    MBPP: the tester runs ``setup_code`` and each assert as a unit. HumanEval: the tester runs the prompt's
    preamble (imports and helper functions, from the reference: trusted) and ``test``, then one unit
    ``check(<entry_point>)``. The candidate program holds the completion (and MBPP's setup) only."""
    test_setup, units = reference_units(reference)
    entry = None if "tests" in reference else reference["entry_point"]
    if entry and reference.get("prompt"):  # the prompt's helpers (poly, encode_cyclic) come from the dataset
        test_setup = prompt_preamble(reference["prompt"], entry) + "\n" + test_setup
    proxies, imports, units = tester_names(candidate, test_setup, units, entry)
    tester = tester_program(imports + "\n" + test_setup, units, proxies, nonce)
    return candidate_program(candidate, reference.get("setup_code") or ""), tester


def parse_report(stdout: str, nonce: str, total: int) -> tuple[dict[int, str], bool]:
    """Unit outcomes ``{i: "P"|"F"|"E"}`` and whether ``END`` was reached, from the harness lines."""
    outcomes: dict[int, str] = {}
    complete = False
    for m in re.finditer(rf"^{nonce} (?:(\d+) ([PFE])|(END))$", stdout, re.MULTILINE):
        if m.group(3):
            complete = True
        elif int(m.group(1)) < total:
            outcomes.setdefault(int(m.group(1)), m.group(2))
    return outcomes, complete


def _components(
    completion: str, code: str | None, compiles: bool, passed: int, total: int, all_pass: bool
) -> dict[str, float]:
    return {
        "strict_format": strict_format(completion),
        "soft_format": soft_format(completion),
        "code_extracted": float(code is not None),
        "code_compiles": float(compiles),
        "tests_passed_fraction": passed / total if total else 0.0,
        "all_tests_pass": float(all_pass),
    }


def _verdict(result: Result, outcomes: dict[int, str], complete: bool, total: int) -> tuple[str, str]:
    """(verdict, detail) from the sandbox result and the harness report."""
    err_tail = result.stderr.strip().splitlines()[-1][:300] if result.stderr.strip() else ""
    if result.status == "error":
        return "sandbox_error", result.reason
    if result.status == "timeout":
        return "timeout", result.reason
    if complete and len(outcomes) == total and all(o == "P" for o in outcomes.values()):
        return CORRECT, ""
    if "E" in outcomes.values() or not complete:
        return "runtime_error", err_tail or result.reason or "tests did not all run"
    return "wrong_answer", err_tail


def judge_code_batch(
    completions: Sequence[str],
    references: Sequence[Mapping[str, Any]],
    *,
    timeout_s: float = 5.0,
    limits: Limits | None = None,
    pool: SandboxPool | None = None,
) -> list[Judgement]:
    """Judge every completion; the programs that need running run concurrently in the sandbox pool.

    ``detail``: ``tests_passed`` / ``tests`` (units reported passing / units in the reference) and
    ``duration_s`` (sandbox wall time, 0 when nothing ran); ``error`` explains a failure in one line.
    """
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    prepared: list[tuple[str | None, bool, int, str, str]] = []  # code, compiles, total, nonce, program
    for completion, reference in zip(completions, references):
        total = len(reference_units(reference)[1])
        code = extract_code(completion)
        if code is not None and len(code) > MAX_CODE_CHARS:
            code = None
        source = candidate_source(code, reference) if code is not None else ""
        compiles = code is not None and _compiles(source)
        nonce = secrets.token_hex(8)
        programs = build_programs(source, reference, nonce) if compiles else ("", "")
        prepared.append((code, compiles, total, nonce, programs))
    to_run = [i for i, p in enumerate(prepared) if p[1]]
    runs = run_programs([prepared[i][4][0] for i in to_run], timeout_s, limits=limits, pool=pool,
                        testers=[prepared[i][4][1] for i in to_run])  # fmt: skip
    results = dict(zip(to_run, runs))
    checks = []
    for i, (code, compiles, total, nonce, _) in enumerate(prepared):
        if code is None or not compiles:
            verdict = "no_code" if code is None else "syntax_error"
            comps = _components(completions[i], code, False, 0, total, False)
            checks.append(
                Judgement(comps, verdict, None, {"tests_passed": 0, "tests": total, "duration_s": 0.0})
            )
            continue
        res = results[i]
        outcomes, complete = parse_report(res.stdout, nonce, total)
        verdict, detail = _verdict(res, outcomes, complete, total)
        passed = sum(o == "P" for o in outcomes.values())
        comps = _components(completions[i], code, True, passed, total, verdict == CORRECT)
        facts = {"tests_passed": passed, "tests": total, "duration_s": res.duration_s}
        checks.append(Judgement(comps, verdict, detail or None, facts))
    return checks


def score_code_batch(
    completions: Sequence[str],
    references: Sequence[Mapping[str, Any]],
    *,
    timeout_s: float = 5.0,
    pool: SandboxPool | None = None,
) -> list[dict[str, float]]:
    """Reward components (keys :data:`CODE_COMPONENTS`) of each completion, run concurrently."""
    return [j.components for j in judge_code_batch(completions, references, timeout_s=timeout_s, pool=pool)]


def score_code(
    completion: str, reference: Mapping[str, Any], *, timeout_s: float = 5.0, pool: SandboxPool | None = None
) -> dict[str, float]:
    """Reward components of one completion (keys :data:`CODE_COMPONENTS`); never raises for a completion."""
    return score_code_batch([completion], [reference], timeout_s=timeout_s, pool=pool)[0]
