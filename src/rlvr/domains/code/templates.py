"""Level 1 of the code generator: one-operation templates, and the pieces every level draws with.

A template takes the rng and returns a :class:`Spec`: the function's candidate names, its argument names
(already drawn), what it does ("returns x plus 7"), the gold body, a one-line reasoning, the Python reference
that computes expected values, and a draw of one test input. Vocabulary is deliberately small so a tiny
tokenizer trained on it covers it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WORDS = ("cat", "dog", "sun", "moon", "tree", "code", "apple", "level", "noon", "banana", "radar", "idea")
NUM_ARGS = ("x", "n", "a", "num", "value")
LIST_ARGS = ("nums", "xs", "values", "items")
STR_ARGS = ("s", "text", "word")


@dataclass(frozen=True)
class Spec:
    """One drawn template: everything a problem needs except the chosen function name and its tests."""

    names: tuple[str, ...]  # candidate function names
    args: tuple[str, ...]  # argument names (already drawn)
    does: str  # "returns x plus 7"
    body: str  # the function body, unindented, may span lines
    reasoning: str
    ref: Callable[..., Any]  # the Python reference computing expected values
    draw: Callable[[random.Random], tuple]  # one test input (argument tuple)


def draw_ints(lo: int, hi: int) -> Callable[[random.Random], tuple]:
    """A test-input draw of one int in ``[lo, hi]``."""
    return lambda r: (r.randint(lo, hi),)


def draw_int_list(r: random.Random, lo: int = -9, hi: int = 20, min_len: int = 1) -> list[int]:
    """A list of ``min_len`` to 6 ints in ``[lo, hi]``."""
    return [r.randint(lo, hi) for _ in range(r.randint(min_len, 6))]


def draw_text(r: random.Random) -> str:
    """One to three words of :data:`WORDS`, space-separated."""
    return " ".join(r.choice(WORDS) for _ in range(r.randint(1, 3)))


# --------------------------------------------------------------------------------------------- templates
# Each takes the rng, returns a Spec. Constants are drawn first so they appear in the statement.


def _add(r: random.Random) -> Spec:
    k, x = r.randint(2, 9), r.choice(NUM_ARGS)
    return Spec(("add_n", "plus_n", "add_const"), (x,), f"returns {x} plus {k}", f"return {x} + {k}",
                f"Add {k} to {x}.", lambda v: v + k, draw_ints(-20, 50))  # fmt: skip


def _sub(r: random.Random) -> Spec:
    k, x = r.randint(2, 9), r.choice(NUM_ARGS)
    return Spec(("sub_n", "minus_n", "take_away"), (x,), f"returns {x} minus {k}", f"return {x} - {k}",
                f"Subtract {k} from {x}.", lambda v: v - k, draw_ints(-20, 50))  # fmt: skip


def _mul(r: random.Random) -> Spec:
    k, x = r.randint(2, 9), r.choice(NUM_ARGS)
    return Spec(("times_n", "mul_n", "scale"), (x,), f"returns {x} times {k}", f"return {x} * {k}",
                f"Multiply {x} by {k}.", lambda v: v * k, draw_ints(-20, 50))  # fmt: skip


def _square(r: random.Random) -> Spec:
    x = r.choice(NUM_ARGS)
    return Spec(("square", "squared", "sq"), (x,), f"returns {x} squared", f"return {x} * {x}",
                f"Multiply {x} by itself.", lambda v: v * v, draw_ints(-20, 20))  # fmt: skip


def _divisible(r: random.Random) -> Spec:
    k, x = r.randint(2, 9), r.choice(NUM_ARGS)
    return Spec(("is_multiple", "divisible", "check_div"), (x,),
                f"returns True if {x} is divisible by {k}, else False", f"return {x} % {k} == 0",
                f"Check that {x} modulo {k} is zero.", lambda v: v % k == 0,
                lambda rr: (rr.randint(0, 12) * (k if rr.random() < 0.5 else 1),))  # fmt: skip


def _is_even(r: random.Random) -> Spec:
    x = r.choice(NUM_ARGS)
    return Spec(("is_even", "even", "check_even"), (x,), f"returns True if {x} is even, else False",
                f"return {x} % 2 == 0", f"Check that {x} modulo 2 is zero.", lambda v: v % 2 == 0,
                draw_ints(-20, 50))  # fmt: skip


def _abs_diff(r: random.Random) -> Spec:
    a, b = r.sample(("a", "b", "x", "y"), 2)
    return Spec(("abs_diff", "distance", "gap"), (a, b), f"returns the absolute difference of {a} and {b}",
                f"return abs({a} - {b})", f"Take abs of {a} minus {b}.", lambda p, q: abs(p - q),
                lambda rr: (rr.randint(-20, 20), rr.randint(-20, 20)))  # fmt: skip


def _sum_to(r: random.Random) -> Spec:
    x = r.choice(NUM_ARGS)
    body = f"total = 0\nfor i in range(1, {x} + 1):\n    total += i\nreturn total"
    return Spec(("sum_to", "sum_up_to", "triangle"), (x,), f"returns the sum of the numbers from 1 to {x}",
                body, f"Loop from 1 to {x} and add each number.", lambda v: v * (v + 1) // 2,
                draw_ints(0, 30))  # fmt: skip


def _factorial(r: random.Random) -> Spec:
    x = r.choice(NUM_ARGS)
    body = f"result = 1\nfor i in range(2, {x} + 1):\n    result *= i\nreturn result"
    return Spec(("factorial", "fact", "product_to"), (x,), f"returns the factorial of {x}", body,
                f"Multiply the numbers from 2 to {x}.", math.factorial, draw_ints(0, 10))  # fmt: skip


def _sum_list(r: random.Random) -> Spec:
    xs = r.choice(LIST_ARGS)
    return Spec(("sum_list", "total", "list_sum", "add_all"), (xs,),
                f"returns the sum of the numbers in the list {xs}", f"return sum({xs})",
                f"Add up all numbers in {xs}.", sum, lambda rr: (draw_int_list(rr, min_len=0),))  # fmt: skip


def _max_list(r: random.Random) -> Spec:
    xs = r.choice(LIST_ARGS)
    return Spec(("max_list", "largest", "biggest", "top"), (xs,),
                f"returns the largest number in the non-empty list {xs}", f"return max({xs})",
                f"Take the max of {xs}.", max, lambda rr: (draw_int_list(rr),))  # fmt: skip


def _min_list(r: random.Random) -> Spec:
    xs = r.choice(LIST_ARGS)
    return Spec(("min_list", "smallest", "lowest", "bottom"), (xs,),
                f"returns the smallest number in the non-empty list {xs}", f"return min({xs})",
                f"Take the min of {xs}.", min, lambda rr: (draw_int_list(rr),))  # fmt: skip


def _count_value(r: random.Random) -> Spec:
    k, xs = r.randint(0, 5), r.choice(LIST_ARGS)
    return Spec(("count_value", "count_n", "how_many"), (xs,), f"returns how many times {k} appears in the list {xs}",
                f"return {xs}.count({k})", f"Count the items of {xs} equal to {k}.", lambda v: v.count(k),
                lambda rr: (draw_int_list(rr, 0, 5, 0),))  # fmt: skip


def _greater(r: random.Random) -> Spec:
    k, xs = r.randint(0, 9), r.choice(LIST_ARGS)
    return Spec(("keep_greater", "above", "filter_big"), (xs,),
                f"returns a list of the numbers in {xs} that are greater than {k}",
                f"return [v for v in {xs} if v > {k}]", f"Keep the items of {xs} above {k}.",
                lambda v: [e for e in v if e > k], lambda rr: (draw_int_list(rr, min_len=0),))  # fmt: skip


def _scale_list(r: random.Random) -> Spec:
    k, xs = r.randint(2, 9), r.choice(LIST_ARGS)
    return Spec(("scale_list", "times_all", "multiply_all"), (xs,),
                f"returns a new list with every number in {xs} multiplied by {k}",
                f"return [v * {k} for v in {xs}]", f"Multiply each item of {xs} by {k}.",
                lambda v: [e * k for e in v], lambda rr: (draw_int_list(rr, min_len=0),))  # fmt: skip


def _last(r: random.Random) -> Spec:
    xs = r.choice(LIST_ARGS)
    return Spec(("last", "last_item", "final", "tail"), (xs,), f"returns the last item of the non-empty list {xs}",
                f"return {xs}[-1]", f"Index {xs} at -1.", lambda v: v[-1], lambda rr: (draw_int_list(rr),))  # fmt: skip


def _vowels(r: random.Random) -> Spec:
    s = r.choice(STR_ARGS)
    body = f'return sum(1 for c in {s} if c in "aeiou")'
    return Spec(("count_vowels", "vowels", "num_vowels"), (s,), f"returns the number of vowels in the string {s}",
                body, f"Count the letters of {s} that are in aeiou.", lambda v: sum(c in "aeiou" for c in v),
                lambda rr: (draw_text(rr),))  # fmt: skip


def _reverse(r: random.Random) -> Spec:
    s = r.choice(STR_ARGS)
    return Spec(("reverse", "backwards", "flip"), (s,), f"returns the string {s} reversed", f"return {s}[::-1]",
                f"Slice {s} with step -1.", lambda v: v[::-1], lambda rr: (draw_text(rr),))  # fmt: skip


def _repeat(r: random.Random) -> Spec:
    k, s = r.randint(2, 5), r.choice(STR_ARGS)
    return Spec(("repeat", "copies", "echo"), (s,), f"returns the string {s} repeated {k} times",
                f"return {s} * {k}", f"Multiply {s} by {k}.", lambda v: v * k, lambda rr: (rr.choice(WORDS),))  # fmt: skip


def _palindrome(r: random.Random) -> Spec:
    s = r.choice(STR_ARGS)
    return Spec(("is_palindrome", "same_back", "mirror"), (s,),
                f"returns True if the string {s} reads the same forwards and backwards, else False",
                f"return {s} == {s}[::-1]", f"Compare {s} with {s} reversed.", lambda v: v == v[::-1],
                lambda rr: (rr.choice(WORDS),))  # fmt: skip


def _count_words(r: random.Random) -> Spec:
    s = r.choice(STR_ARGS)
    return Spec(("count_words", "word_count", "num_words"), (s,), f"returns the number of words in the string {s}",
                f"return len({s}.split())", f"Split {s} on spaces and count the parts.",
                lambda v: len(v.split()), lambda rr: (draw_text(rr),))  # fmt: skip


TEMPLATES: dict[str, Callable[[random.Random], Spec]] = {
    f.__name__.lstrip("_"): f
    for f in (
        _add,
        _sub,
        _mul,
        _square,
        _divisible,
        _is_even,
        _abs_diff,
        _sum_to,
        _factorial,
        _sum_list,
        _max_list,
        _min_list,
        _count_value,
        _greater,
        _scale_list,
        _last,
        _vowels,
        _reverse,
        _repeat,
        _palindrome,
        _count_words,
    )  # fmt: skip
}
