"""Seeded generator of small function-writing problems with tests (the offline default of the code task).

A problem is a one-sentence statement ("Write a function add_n(x) that returns x plus 7."), a gold solution,
a one-line reasoning and 3-5 ``assert`` tests whose expected values come from a Python reference of its
template. Templates come in difficulty levels (:data:`LEVELS`): level 1 does one operation
(:mod:`rlvr.domains.code.templates`), levels 2 and 3 compose two or three of them
(:mod:`rlvr.domains.code.compose`), in the same words and code idioms.

A problem is a pure function of (seed, split, index, difficulty). Train and val are disjoint by statement: a
statement belongs to val when its hash falls in one bucket of five; a problem picks a template, then draws
from it until the statement is of its split (so templates are equally frequent in both splits).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from rlvr.domains.code.compose import LEVEL_2, LEVEL_3
from rlvr.domains.code.templates import TEMPLATES, Spec

VAL_BUCKETS = 5  # one statement hash bucket in five is val
#: difficulty -> its templates (name -> template); level 1 is the one-operation set the generator began with
LEVELS: dict[int, dict[str, Callable[[random.Random], Spec]]] = {1: TEMPLATES, 2: LEVEL_2, 3: LEVEL_3}


@dataclass(frozen=True)
class CodeProblem:
    """One generated problem.

    Attributes:
        statement: the task sentence shown to the model.
        name: the function to write.
        code: the gold solution (a full ``def``).
        tests: ``assert`` statements calling ``name``.
        reasoning: a one-line gold reasoning for the SFT target.
        template: which template produced it.
    """

    statement: str
    name: str
    code: str
    tests: tuple[str, ...]
    reasoning: str
    template: str


def is_val_statement(statement: str) -> bool:
    """Whether a statement belongs to val (a stable hash, independent of seed and Python's hash salt)."""
    return int(hashlib.sha256(statement.encode()).hexdigest()[:8], 16) % VAL_BUCKETS == 0


def _tests(name: str, spec: Spec, r: random.Random) -> tuple[str, ...]:
    want, seen, tests = r.randint(3, 5), set(), []
    for _ in range(50):  # distinct inputs; small input spaces may yield fewer than wanted (never < 1)
        args = spec.draw(r)
        if repr(args) in seen:
            continue
        seen.add(repr(args))
        tests.append(f"assert {name}({', '.join(map(repr, args))}) == {spec.ref(*args)!r}")
        if len(tests) == want:
            break
    return tuple(tests)


def make_problem(seed: int, split: str, index: int, difficulty: int = 1) -> CodeProblem:
    """Problem ``index`` of ``split`` ("train" or "val") at level ``difficulty``: a pure function of its
    arguments."""
    if split not in ("train", "val"):
        raise ValueError(f"generated code split must be 'train' or 'val', got {split!r}")
    if difficulty not in LEVELS:
        raise ValueError(f"difficulty must be one of {sorted(LEVELS)}, got {difficulty}")
    templates = LEVELS[difficulty]
    # str seeds hash with sha512: stable across runs; level 1 keeps the seed it had before levels existed
    r = random.Random(f"code:{seed}:{split}:{index}" + (f":{difficulty}" if difficulty > 1 else ""))
    found = None
    while found is None:  # template first, so templates are equally frequent in both splits
        template = r.choice(sorted(templates))
        for _ in range(200):
            spec = templates[template](r)
            name = r.choice(spec.names)
            signature = f"{name}({', '.join(spec.args)})"
            statement = f"Write a function {signature} that {spec.does}."
            if is_val_statement(statement) == (split == "val"):
                found = spec, name, signature, statement
                break
    spec, name, signature, statement = found
    body = "\n".join("    " + line for line in spec.body.splitlines())
    code = f"def {signature}:\n{body}"
    return CodeProblem(statement, name, code, _tests(name, spec, r), spec.reasoning, template)
