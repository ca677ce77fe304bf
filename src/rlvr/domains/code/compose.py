"""Levels 2 and 3 of the code generator: two or three level-1 operations composed, with drawn constants.

Level 2 is 23 fixed compositions of two operations (:data:`LEVEL_2`); level 3 starts from a level-1 value
and draws the remaining steps, three operations in all (:data:`LEVEL_3`).

Statements join level-1 phrases by a small grammar and gold code joins level-1 idioms, so a problem needs
pieces a level-1 problem teaches, put together in a way no level-1 problem shows:

- a value, then steps after commas: "x plus 3, times 4" -> ``(x + 3) * 4``; "the largest number in the
  non-empty list xs, times 3" -> ``max(xs) * 3`` (the first step on a bare argument takes no comma);
- a test of a value: "True if x plus 4 is divisible by 3, else False" -> ``(x + 4) % 3 == 0``;
- a filtered list, reduced: "the sum of the numbers in xs that are greater than 5" ->
  ``sum([v for v in xs if v > 5])``; "how many numbers in xs are even" -> ``len([v for v in xs if v % 2 == 0])``;
- string steps: "the string s reversed, repeated 2 times" -> ``s[::-1] * 2``.

The reasoning chains the level-1 reasonings: "Add 3 to x, then multiply by 4."
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from rlvr.domains.code.templates import (
    LIST_ARGS,
    NUM_ARGS,
    STR_ARGS,
    Spec,
    draw_int_list,
    draw_ints,
    draw_text,
)

# how loosely an expression binds, tightest first: an operand is put in () when it binds no tighter than its operator
ATOM, PRODUCT, SUM, TEST = 0, 1, 2, 3


@dataclass(frozen=True)
class Value:
    """An expression of the function's arguments, as the statement says it and as the gold code computes it.

    Attributes:
        phrase: how the statement names it ("x plus 3").
        expr: the code computing it ("x + 3").
        prec: :data:`ATOM`, :data:`PRODUCT`, :data:`SUM` or :data:`TEST` (decides the parentheses).
        clauses: the reasoning, one clause per operation ("Add 3 to x", "multiply by 4").
        ref: the Python reference, a function of the arguments.
        args: argument names.
        draw: one test input (argument tuple).
        lines: statements the return follows (a loop's accumulator).
        plain: the value is an argument as given (its first step reads "x plus 3", not "x, plus 3").
    """

    phrase: str
    expr: str
    prec: int
    clauses: tuple[str, ...]
    ref: Callable[..., Any]
    args: tuple[str, ...]
    draw: Callable[[random.Random], tuple]
    lines: tuple[str, ...] = ()
    plain: bool = False


def _wrap(v: Value, prec: int) -> str:
    """``v.expr``, in parentheses when it binds no tighter than ``prec``."""
    return f"({v.expr})" if v.prec >= prec else v.expr


def _k(r: random.Random, lo: int = 2, hi: int = 9) -> int:
    return r.randint(lo, hi)


# ------------------------------------------------------------------------------------------------ values
# Each draws its argument names from the rng and reads like the level-1 template it comes from.


def _num(r: random.Random) -> Value:
    x = r.choice(NUM_ARGS)
    return Value(x, x, ATOM, (), lambda v: v, (x,), draw_ints(-20, 50), plain=True)


def _string(r: random.Random) -> Value:
    s = r.choice(STR_ARGS)
    return Value(f"the string {s}", s, ATOM, (), lambda v: v, (s,), lambda rr: (draw_text(rr),), plain=True)


def _abs_diff(r: random.Random) -> Value:
    a, b = r.sample(("a", "b", "x", "y"), 2)
    return Value(f"the absolute difference of {a} and {b}", f"abs({a} - {b})", ATOM,
                 (f"Take abs of {a} minus {b}",), lambda p, q: abs(p - q), (a, b),
                 lambda rr: (rr.randint(-20, 20), rr.randint(-20, 20)))  # fmt: skip


def _sum_to(r: random.Random) -> Value:
    x = r.choice(NUM_ARGS)
    return Value(f"the sum of the numbers from 1 to {x}", "total", ATOM,
                 (f"Loop from 1 to {x} and add each number",), lambda v: v * (v + 1) // 2, (x,), draw_ints(0, 30),
                 ("total = 0", f"for i in range(1, {x} + 1):", "    total += i"))  # fmt: skip


def _factorial(r: random.Random) -> Value:
    x = r.choice(NUM_ARGS)
    return Value(f"the factorial of {x}", "result", ATOM, (f"Multiply the numbers from 2 to {x}",),
                 math.factorial, (x,), draw_ints(0, 10),
                 ("result = 1", f"for i in range(2, {x} + 1):", "    result *= i"))  # fmt: skip


_LIST_CALLS = {  # level-1 list reductions: phrase, code, reasoning, reference, whether the list may be empty
    "sum": ("the sum of the numbers in the list {xs}", "sum({xs})", "Add up all numbers in {xs}", sum, True),
    "max": ("the largest number in the non-empty list {xs}", "max({xs})", "Take the max of {xs}", max, False),
    "min": ("the smallest number in the non-empty list {xs}", "min({xs})", "Take the min of {xs}", min, False),
}  # fmt: skip


def _list_call(r: random.Random, kind: str) -> Value:
    phrase, expr, clause, ref, empty = _LIST_CALLS[kind]
    xs = r.choice(LIST_ARGS)
    return Value(phrase.format(xs=xs), expr.format(xs=xs), ATOM, (clause.format(xs=xs),), ref, (xs,),
                 lambda rr: (draw_int_list(rr, min_len=0 if empty else 1),))  # fmt: skip


def _vowels(r: random.Random) -> Value:
    s = r.choice(STR_ARGS)
    return Value(f"the number of vowels in the string {s}", f'sum(1 for c in {s} if c in "aeiou")', ATOM,
                 (f"Count the letters of {s} that are in aeiou",), lambda v: sum(c in "aeiou" for c in v), (s,),
                 lambda rr: (draw_text(rr),))  # fmt: skip


def _words(r: random.Random) -> Value:
    s = r.choice(STR_ARGS)
    return Value(f"the number of words in the string {s}", f"len({s}.split())", ATOM,
                 (f"Split {s} on spaces and count the parts",), lambda v: len(v.split()), (s,),
                 lambda rr: (draw_text(rr),))  # fmt: skip


def _keep(r: random.Random, keep: str, xs: str) -> tuple[str, str, str, Callable[[int], bool]]:
    """A filter of level-1 wording: its code condition on ``v``, words, reasoning clause and reference."""
    if keep == "greater":
        k = _k(r, 0, 9)
        return f"v > {k}", f"greater than {k}", f"Keep the items of {xs} above {k}", lambda e: e > k
    if keep == "even":
        return "v % 2 == 0", "even", f"Keep the even items of {xs}", lambda e: e % 2 == 0
    k = _k(r, 2, 5)
    clause = f"Keep the items of {xs} divisible by {k}"
    return f"v % {k} == 0", f"divisible by {k}", clause, lambda e: e % k == 0


def _filtered(r: random.Random, keep: str, reduce: str, scale: bool = False) -> Value:
    """The numbers of a list that are ``keep`` ("greater", "even", "divisible"), each multiplied by a constant
    when ``scale``, as a list or reduced (``reduce``: "list", "sum" or "count")."""
    xs = r.choice(LIST_ARGS)
    cond, words, clause, test = _keep(r, keep, xs)
    m = _k(r) if scale else 1
    item, each = (f"v * {m}", f", each multiplied by {m}") if scale else ("v", "")
    comp = f"[{item} for v in {xs} if {cond}]"

    def kept(v: list[int]) -> list[int]:
        return [e * m for e in v if test(e)]

    phrase, expr, ref, last = {
        "list": (f"a list of the numbers in {xs} that are {words}{each}", comp, kept, ()),
        "sum": (f"the sum of the numbers in {xs} that are {words}{each}", f"sum({comp})", lambda v: sum(kept(v)),
                ("add them up",)),
        "count": (f"how many numbers in {xs} are {words}", f"len({comp})", lambda v: len(kept(v)),
                  ("count them",)),
    }[reduce]  # fmt: skip
    clauses = (clause, f"multiply each by {m}") if scale else (clause,)
    return Value(phrase, expr, ATOM, clauses + last, ref, (xs,), lambda rr: (draw_int_list(rr, min_len=0),))


# ------------------------------------------------------------------------------------------------- steps


def _step(
    v: Value, words: str, expr: str, prec: int, first: str, later: str, fn: Callable[[Any], Any]
) -> Value:
    """``v`` with one more operation: ``words`` joins the phrase, ``first`` or ``later`` the reasoning."""
    ref = v.ref
    phrase = f"{v.phrase}{' ' if v.plain else ', '}{words}"
    clauses = v.clauses + (first if v.plain else later,)
    return replace(
        v, phrase=phrase, expr=expr, prec=prec, clauses=clauses, ref=lambda *a: fn(ref(*a)), plain=False
    )


def _plus(v: Value, k: int) -> Value:
    return _step(v, f"plus {k}", f"{v.expr} + {k}", SUM, f"Add {k} to {v.expr}", f"add {k}", lambda y: y + k)


def _minus(v: Value, k: int) -> Value:
    return _step(v, f"minus {k}", f"{v.expr} - {k}", SUM, f"Subtract {k} from {v.expr}", f"subtract {k}",
                 lambda y: y - k)  # fmt: skip


def _times(v: Value, k: int) -> Value:
    return _step(v, f"times {k}", f"{_wrap(v, SUM)} * {k}", PRODUCT, f"Multiply {v.expr} by {k}",
                 f"multiply by {k}", lambda y: y * k)  # fmt: skip


def _squared(v: Value) -> Value:
    e = _wrap(v, PRODUCT)
    return _step(v, "squared", f"{e} * {e}", PRODUCT, f"Multiply {v.expr} by itself", "multiply it by itself",
                 lambda y: y * y)  # fmt: skip


def _reversed(v: Value) -> Value:
    return _step(v, "reversed", f"{_wrap(v, PRODUCT)}[::-1]", ATOM, f"Slice {v.expr} with step -1",
                 "slice it with step -1", lambda y: y[::-1])  # fmt: skip


def _repeated(v: Value, k: int) -> Value:
    return _step(v, f"repeated {k} times", f"{_wrap(v, SUM)} * {k}", PRODUCT, f"Multiply {v.expr} by {k}",
                 f"multiply by {k}", lambda y: y * k)  # fmt: skip


def _is_even(v: Value) -> Value:
    return _test(v, "even", 2)


def _is_divisible(v: Value, k: int) -> Value:
    return _test(v, f"divisible by {k}", k)


def _test(v: Value, words: str, k: int) -> Value:
    """``v`` tested: "True if <v> is <words>, else False", coded as ``v`` modulo ``k`` is zero (level-1 idiom)."""
    ref = v.ref
    clause = f"Check that {v.expr} modulo {k} is zero" if v.plain else f"check that it modulo {k} is zero"
    phrase, expr = f"True if {v.phrase} is {words}, else False", f"{_wrap(v, PRODUCT)} % {k} == 0"
    clauses = v.clauses + (clause,)
    return replace(
        v, phrase=phrase, expr=expr, prec=TEST, clauses=clauses, ref=lambda *a: ref(*a) % k == 0, plain=False
    )


# ------------------------------------------------------------------------------------------------- specs


def _balanced(
    draw: Callable[[random.Random], tuple], ref: Callable[..., Any]
) -> Callable[[random.Random], tuple]:
    """A draw whose inputs make ``ref`` alternately True and False (when 30 tries find such an input)."""

    wants = itertools.cycle((True, False))  # alternate: a constant answer fails one of any two tests

    def balanced(r: random.Random) -> tuple:
        want = next(wants)
        for _ in range(30):
            args = draw(r)
            if ref(*args) == want:
                break
        return args

    return balanced


def _to_spec(names: tuple[str, ...], v: Value) -> Spec:
    """The template output for ``v``: "returns <phrase>", its lines then ``return <expr>``, chained reasoning."""
    reasoning = ", then ".join(v.clauses) + "."
    draw = _balanced(v.draw, v.ref) if v.prec == TEST else v.draw
    body = "\n".join((*v.lines, f"return {v.expr}"))
    return Spec(names, v.args, f"returns {v.phrase}", body, reasoning, v.ref, draw)


def _template(
    names: tuple[str, ...], build: Callable[[random.Random], Value]
) -> Callable[[random.Random], Spec]:
    return lambda r: _to_spec(names, build(r))


#: two operations; each entry: template name -> its builder (names the function may take, then the value)
LEVEL_2: dict[str, Callable[[random.Random], Spec]] = {
    "add_times": _template(("add_times", "plus_times", "add_mul"),
                           lambda r: _times(_plus(_num(r), _k(r)), _k(r))),
    "times_add": _template(("times_add", "mul_add", "times_plus"),
                           lambda r: _plus(_times(_num(r), _k(r)), _k(r))),
    "sub_times": _template(("sub_times", "minus_times", "sub_mul"),
                           lambda r: _times(_minus(_num(r), _k(r)), _k(r))),
    "times_sub": _template(("times_sub", "mul_sub", "times_minus"),
                           lambda r: _minus(_times(_num(r), _k(r)), _k(r))),
    "add_square": _template(("add_square", "plus_squared", "shift_square"),
                            lambda r: _squared(_plus(_num(r), _k(r)))),
    "square_add": _template(("square_add", "squared_plus", "sq_add"),
                            lambda r: _plus(_squared(_num(r)), _k(r))),
    "add_divisible": _template(("add_divisible", "plus_divides", "check_sum_div"),
                               lambda r: _is_divisible(_plus(_num(r), _k(r)), _k(r))),
    "square_divisible": _template(("square_divisible", "sq_divides", "check_square"),
                                  lambda r: _is_divisible(_squared(_num(r)), _k(r))),
    "abs_diff_times": _template(("diff_times", "gap_times", "scaled_gap"),
                                lambda r: _times(_abs_diff(r), _k(r))),
    "sum_to_add": _template(("sum_to_plus", "triangle_plus", "sum_up_add"), lambda r: _plus(_sum_to(r), _k(r))),
    "factorial_sub": _template(("fact_minus", "factorial_sub", "product_minus"),
                               lambda r: _minus(_factorial(r), _k(r))),
    "sum_greater": _template(("sum_above", "sum_greater", "big_total"),
                             lambda r: _filtered(r, "greater", "sum")),
    "count_greater": _template(("count_above", "count_greater", "num_big"),
                               lambda r: _filtered(r, "greater", "count")),
    "count_even": _template(("count_even", "num_even", "evens"), lambda r: _filtered(r, "even", "count")),
    "sum_even": _template(("sum_even", "even_total", "add_evens"), lambda r: _filtered(r, "even", "sum")),
    "keep_divisible": _template(("keep_multiples", "multiples", "filter_div"),
                                lambda r: _filtered(r, "divisible", "list")),
    "scale_greater": _template(("scale_above", "grow_big", "times_greater"),
                               lambda r: _filtered(r, "greater", "list", scale=True)),
    "max_times": _template(("max_times", "top_scaled", "largest_times"),
                           lambda r: _times(_list_call(r, "max"), _k(r))),
    "min_add": _template(("min_plus", "lowest_plus", "min_add"), lambda r: _plus(_list_call(r, "min"), _k(r))),
    "sum_list_even": _template(("is_sum_even", "even_sum", "check_sum"),
                               lambda r: _is_even(_list_call(r, "sum"))),
    "reverse_repeat": _template(("reverse_repeat", "flip_copies", "back_echo"),
                                lambda r: _repeated(_reversed(_string(r)), _k(r, 2, 5))),
    "vowels_times": _template(("vowels_times", "vowel_score", "scaled_vowels"),
                              lambda r: _times(_vowels(r), _k(r))),
    "words_even": _template(("even_words", "words_even", "check_words"), lambda r: _is_even(_words(r))),
}  # fmt: skip

# Level 3 draws its operations: a level-1 value, then random steps up to three operations in all. Its ~270
# statement shapes (level 2 has 23) are too many to learn one by one: a solution has to be put together.
_STEPS = ("plus", "minus", "times", "squared")
_TESTS = ("even", "divisible")


def _apply(v: Value, step: str, r: random.Random) -> Value:
    """``v`` with ``step`` (one of :data:`_STEPS` or :data:`_TESTS`), its constant drawn from ``r``."""
    if step == "squared":
        return _squared(v)
    if step == "even":
        return _is_even(v)
    return {"plus": _plus, "minus": _minus, "times": _times, "divisible": _is_divisible}[step](v, _k(r))


def _chain(
    stem: str, base: Callable[[random.Random], Value], steps: int, tests: bool = True
) -> Callable[[random.Random], Spec]:
    """A template of ``base`` then ``steps`` random steps (a test only last and when ``tests``, squared at
    most once)."""

    def build(r: random.Random) -> Value:
        while True:  # redraw a test whose answer never changes ("the sum of the even numbers in xs is even")
            v, allowed = base(r), list(_STEPS)
            for i in range(steps):
                step = r.choice(allowed + list(_TESTS) if tests and i == steps - 1 else allowed)
                v = _apply(v, step, r)
                allowed = [s for s in allowed if s != "squared"] if step == "squared" else allowed
            if v.prec != TEST or len({v.ref(*v.draw(r)) for _ in range(40)}) > 1:
                return v

    return _template((f"{stem}_calc", f"{stem}_mix", f"{stem}_combo"), build)


#: three operations: template name -> builder (one template per starting value, its steps drawn)
LEVEL_3: dict[str, Callable[[random.Random], Spec]] = {
    "num_chain": _chain("num", _num, 3),
    "abs_diff_chain": _chain("gap", _abs_diff, 2),
    "sum_to_chain": _chain("triangle", _sum_to, 2),
    "sum_list_chain": _chain("total", lambda r: _list_call(r, "sum"), 2),
    "max_chain": _chain("max", lambda r: _list_call(r, "max"), 2),
    "min_chain": _chain("min", lambda r: _list_call(r, "min"), 2),
    "vowels_chain": _chain("vowel", _vowels, 2),
    "words_chain": _chain("word", _words, 2),
    "sum_greater_chain": _chain("sum_above", lambda r: _filtered(r, "greater", "sum"), 1),
    # no tests of a count: "True if how many numbers in xs are even is even" does not read as English
    "count_greater_chain": _chain("count_above", lambda r: _filtered(r, "greater", "count"), 1, tests=False),
    "count_even_chain": _chain("evens", lambda r: _filtered(r, "even", "count"), 1, tests=False),
    "sum_even_chain": _chain("even_total", lambda r: _filtered(r, "even", "sum"), 1),
    "sum_divisible_chain": _chain("multiples", lambda r: _filtered(r, "divisible", "sum"), 1),
    "sum_greater_scaled": _template(("sum_above_scaled", "scaled_total", "grow_total"),
                                    lambda r: _filtered(r, "greater", "sum", scale=True)),
}  # fmt: skip
