"""Score Python completions by running them against tests in the sandbox.

A reference is one of
  * HumanEval style: ``{"test": str, "entry_point": str, "prompt": str (optional)}`` — ``test`` defines
    ``check(candidate)``, run as ``check(<entry_point>)``: one unit, passed or not;
  * MBPP style: ``{"tests": [assert statements], "setup_code": str (optional)}`` — each assert is a unit.

The program run in the sandbox is the candidate code, then the setup/test code, then a harness that runs
each unit in ``try``/``except BaseException`` and reports ``<nonce> <i> P|F|E`` lines and finally
``<nonce> END``. The nonce is fresh per program, so a candidate that exits early (``sys.exit(0)``,
``os._exit``) or kills the harness cannot produce a pass: only units reported ``P`` count, and
``all_tests_pass`` also needs ``END``. Candidate output is swallowed while tests run. Not defended against:
a candidate reading the nonce through frame introspection, or returning an object whose ``__eq__`` is
always true (the tests run in the candidate's process); we defend against accidents and tiny models.
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
MAX_CODE_CHARS = 100_000  # longer "code" is not a solution; compiling it would only cost the trainer time

# Builtins are reached through the module so that a candidate defining e.g. its own `compile` does not
# break the harness; a unit's outcome is P (passed), F (assertion failed) or E (any other exception).
_HARNESS = """
import builtins as _rlvr_b, os as _rlvr_os, sys as _rlvr_sys
class _RlvrSink:
    def write(self, s): return len(s)
    def flush(self): pass
def _rlvr_report(line):
    _rlvr_os.write(1, ("\\n{nonce} " + line + "\\n").encode())
def _rlvr_why(e):
    try:
        return ("%s: %s" % (_rlvr_b.type(e).__name__, e))[:300]
    except _rlvr_b.BaseException:
        return _rlvr_b.type(e).__name__
def _rlvr_run(i, src):
    out, err = _rlvr_sys.stdout, _rlvr_sys.stderr
    _rlvr_sys.stdout = _rlvr_sys.stderr = _RlvrSink()
    try:
        _rlvr_b.exec(_rlvr_b.compile(src, "<test %d>" % i, "exec"), _rlvr_b.globals())
        outcome, why = "P", ""
    except _rlvr_b.AssertionError as e:
        outcome, why = "F", _rlvr_why(e)
    except _rlvr_b.BaseException as e:
        outcome, why = "E", _rlvr_why(e)
    finally:
        _rlvr_sys.stdout, _rlvr_sys.stderr = out, err
    if why:
        _rlvr_os.write(2, ("test %d: %s\\n" % (i, why)).encode("utf-8", "replace"))
    _rlvr_report("%d %s" % (i, outcome))
for _rlvr_i, _rlvr_src in _rlvr_b.enumerate({units!r}):
    _rlvr_run(_rlvr_i, _rlvr_src)
_rlvr_report("END")
"""


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


def build_program(candidate: str, reference: Mapping[str, Any], nonce: str) -> str:
    """The whole program run in the sandbox: candidate, test code, harness (see the module docstring)."""
    setup, units = reference_units(reference)
    # the candidate's `if __name__ == "__main__":` demo (often reading stdin) must not run
    return "\n".join(
        [
            "__name__ = '__candidate__'",
            candidate,
            "__name__ = '__main__'",
            setup,
            _HARNESS.format(nonce=nonce, units=units),
        ]
    )


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
        program = build_program(source, reference, nonce) if compiles else ""
        prepared.append((code, compiles, total, nonce, program))
    to_run = [i for i, p in enumerate(prepared) if p[1]]
    results = dict(
        zip(to_run, run_programs([prepared[i][4] for i in to_run], timeout_s, limits=limits, pool=pool))
    )
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
