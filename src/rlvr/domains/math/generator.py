"""Seeded arithmetic word problems for the math task, in six difficulty levels.

Reasoning is a few short equations ("7 + 5 = 12"), small enough in vocabulary and length for a ~4M-parameter
model to learn in minutes on a CPU. Train and val never share a problem (a hash of the numbers and
operations decides which partition a problem belongs to).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Level:
    """Generator settings of one difficulty: number of steps, largest operand, allowed operations."""

    steps: tuple[int, int]
    max_n: int
    ops: tuple[str, ...]


#: difficulty -> level; "groups" is k * m then +, "share" a final exact division, "price" a final product
# Level 1 keeps operands at 10 or below: the tiny default model learns its addition and subtraction
# facts within a few hundred SFT steps, so RL starts from a policy that is right some of the time (at level 2,
# operands up to 20, 300 SFT steps of 64 prompts leave it at ~14% and RL has little to sharpen).
LEVELS: dict[int, Level] = {
    1: Level((1, 2), 10, ("add", "sub")),
    2: Level((1, 2), 20, ("add", "sub")),
    3: Level((2, 3), 50, ("add", "sub", "groups")),
    4: Level((2, 4), 100, ("add", "sub", "groups", "share")),
    5: Level((3, 5), 500, ("add", "sub", "groups", "share", "price")),
    6: Level((4, 6), 1000, ("add", "sub", "groups", "share", "price")),
}

_NAMES = (("Tom", "he", "him"), ("Anna", "she", "her"), ("Ben", "he", "him"), ("Mia", "she", "her"),
          ("Sam", "he", "him"), ("Lily", "she", "her"), ("Max", "he", "him"), ("Emma", "she", "her"))  # fmt: skip
_OBJECTS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "coins", "cards")
_START = ("{name} has {a} {obj}.", "{name} starts with {a} {obj}.", "There are {a} {obj} in {name}'s box.")
_ADD = ("{He} buys {b} more {obj}.", "{He} finds {b} more {obj}.", "{friend} gives {him} {b} more {obj}.")
_SUB = ("{He} gives {b} {obj} to {friend}.", "{He} loses {b} {obj}.", "{He} sells {b} {obj}.")
_GROUPS = "{He} buys {k} bags with {m} {obj} in each bag."
_SHARE = "{He} shares the {obj} equally among {k} friends. How many {obj} does each friend get?"
_PRICE = "{He} sells all the {obj} for {p} dollars each. How many dollars does {he} get?"
_ASK = "How many {obj} does {name} have now?"
# One problem in this many (by a hash of its numbers and operations) belongs to val, so val never
# repeats a train problem whatever the counts drawn.
_VAL_BUCKETS = 8


@dataclass(frozen=True)
class Problem:
    """A generated word problem: ``reasoning`` is one equation per line, the last one's result is ``answer``."""

    question: str
    reasoning: str
    answer: int
    key: str  # numbers and operations only (no names or wording): what makes two problems the same


def _draw(rng: random.Random, level: Level) -> Problem:
    """One problem from ``rng`` (see :func:`generate_problem`)."""
    name, he, him = rng.choice(_NAMES)
    friend = rng.choice([n for n, _, _ in _NAMES if n != name])
    fill = {
        "name": name,
        "he": he,
        "He": he.capitalize(),
        "him": him,
        "friend": friend,
        "obj": rng.choice(_OBJECTS),
    }
    x = rng.randint(2, level.max_n)
    sentences, lines, key = [rng.choice(_START).format(a=x, **fill)], [], [str(x)]
    n_steps = rng.randint(*level.steps)
    for step in range(n_steps):
        # share and price end the problem (they change what is counted), so only the last step may use them
        op = rng.choice([o for o in level.ops if step == n_steps - 1 or o not in ("share", "price")])
        divisors = [k for k in range(2, 10) if x and x % k == 0]
        if (op == "sub" and x < 2) or (op == "share" and not divisors):
            op = "add"
        if op == "add":
            b = rng.randint(2, level.max_n)
            sentences.append(rng.choice(_ADD).format(b=b, **fill))
            lines.append(f"{x} + {b} = {x + b}")
            x, key = x + b, key + [f"+{b}"]
        elif op == "sub":
            b = rng.randint(2, min(x, level.max_n))
            sentences.append(rng.choice(_SUB).format(b=b, **fill))
            lines.append(f"{x} - {b} = {x - b}")
            x, key = x - b, key + [f"-{b}"]
        elif op == "groups":
            k, m = rng.randint(2, 9), rng.randint(2, max(2, level.max_n // 10))
            sentences.append(_GROUPS.format(k=k, m=m, **fill))
            lines += [f"{k} * {m} = {k * m}", f"{x} + {k * m} = {x + k * m}"]
            x, key = x + k * m, key + [f"+{k}*{m}"]
        elif op == "share":
            k = rng.choice(divisors)
            sentences.append(_SHARE.format(k=k, **fill))
            lines.append(f"{x} / {k} = {x // k}")
            x, key = x // k, key + [f"/{k}"]
            break
        else:  # price
            p = rng.randint(2, 9)
            sentences.append(_PRICE.format(p=p, **fill))
            lines.append(f"{x} * {p} = {x * p}")
            x, key = x * p, key + [f"*{p}"]
            break
    else:
        sentences.append(_ASK.format(**fill))
    return Problem(" ".join(sentences), "\n".join(lines), x, " ".join(key))


def is_val_problem(key: str) -> bool:
    """Whether a problem (by its :attr:`Problem.key`) belongs to the val partition."""
    return hashlib.blake2b(key.encode(), digest_size=2).digest()[0] % _VAL_BUCKETS == 0


def generate_problem(seed: int, split: str, index: int, difficulty: int = 1) -> Problem:
    """Problem ``index`` of ``split``: deterministic in its arguments, train and val never share a problem.

    Each (seed, split, index) seeds its own RNG, which redraws until the problem falls in ``split``'s
    partition of problem space (1/8 of it for val, the rest for train).
    """
    if difficulty not in LEVELS:
        raise ValueError(f"difficulty must be one of {sorted(LEVELS)}, got {difficulty}")
    rng = random.Random(f"rlvr-math/{seed}/{split}/{index}")
    while True:
        problem = _draw(rng, LEVELS[difficulty])
        if is_val_problem(problem.key) == (split == "val"):
            return problem
