"""Math verifier: answer extraction, equivalence through math-verify, and the GSM8K GRPO reward components.

Everything here is a pure function of strings that never raises and returns within a bounded time on hostile
completions (huge exponents, deep nesting, 100k-character outputs, unbalanced braces), in any thread:
  * plain numbers are compared exactly (``Fraction``) without touching sympy;
  * anything else goes through math-verify behind cheap caps (:func:`too_risky`: length, nesting, exponent
    size, power towers, big factorials, calculus) and one deadline on parse + verify together
    (:func:`rlvr.domains.math.deadline.run_with_deadline`). math-verify's own timeouts are switched off: they use ``signal.alarm``,
    which raises outside the main thread, and caps alone cannot bound sympy (``(x+y+z)^{99}`` is 12
    characters and never finishes expanding).
  * a completion repeating ``<answer>`` or ``<reasoning>`` more than 16 times is scored as if it had no tags:
    :mod:`rlvr.domains.format`'s lazy regexes cost (opening tags) x (length), 10 s on 100k characters.

Lengths (``length``, ``lcpo_exact``, ``lcpo_max``) are counted in whitespace-separated words of the
reasoning: a tokenizer-free unit that is identical for the tiny BPE and for Qwen, and cheap to count.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Mapping
from fractions import Fraction
from functools import cache, lru_cache
from typing import Any

from rlvr.domains import format as fmt
from rlvr.domains.base import CORRECT, Judgement
from rlvr.domains.math.deadline import run_with_deadline

#: reward components of the math task, in the order :func:`score_math` returns them
MATH_COMPONENTS: tuple[str, ...] = (
    "correctness",
    "strict_format",
    "soft_format",
    "is_number",
    "length",
    "lcpo_exact",
    "lcpo_max",
)
#: extraction paths reported by :func:`extract_math_answer`, most to least deliberate
EXTRACTION_PATHS: tuple[str, ...] = ("answer_tag", "boxed", "last_number", "none")
#: paths that count as the required format (strict accuracy); ``last_number`` is the lenient fallback
FORMATTED_PATHS: tuple[str, ...] = ("answer_tag", "boxed")
#: verdicts of :func:`judge_math`: a wrong answer outside the format is first a format failure
VERDICTS: tuple[str, ...] = (CORRECT, "wrong_answer", "format_error", "no_answer")

#: default LCPO slope per word of reasoning: 50 words off the target moves ``lcpo_max`` from 0.5 to 0 or 1
LCPO_ALPHA = 0.01
#: default LCPO offset (L1 paper's delta): ``lcpo_max`` is 0.5 for a correct answer of exactly the target length
LCPO_BETA = 0.5
#: seconds allowed for one math-verify parse + comparison
VERIFY_TIMEOUT_S = 2.0

# Caps on answers handed to math-verify. They turn away at once what would otherwise burn the whole deadline
# (sin nested 6 deep: ~9 s; an integral of x^9999 never returns) and C-level integer work no deadline can
# interrupt (10^{10^{10}}). MATH-500 gold answers have at most 53 characters, nesting depth 2, no calculus and
# at most one function name.
MAX_ANSWER_CHARS = 300
#: the final answer is looked for in the last this many characters of a completion only (a hostile
#: 10 MB completion costs the same as a long honest one; format checks still read all of it, in linear time)
MAX_COMPLETION_CHARS = 20_000
_MAX_DEPTH = 8
_MAX_FUNCTIONS = 4
# A completion repeating a tag more often than this is degenerate; format.py's lazy regexes cost
# (number of opening tags) x (length), so beyond it the tags are ignored rather than searched.
_MAX_TAGS = 16

_PLAIN_NUMBER = re.compile(r"[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
# A sign counts only when it is not a binary minus ("12-5" ends in the number 5, not -5).
_LAST_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_EXPONENT = re.compile(r"(?:\^|\*\*)[{(]?[+-]?(\d+)")
_POWER_TOWER = re.compile(r"(?:\^|\*\*)\s*(?:\{[^}]*|\([^)]*|[\w.]+\s*)(?:\^|\*\*)")
_BIG_FACTORIAL = re.compile(r"(?<!\\)(?:\d{4,}|[)}\]])\s*!")
_CALCULUS = re.compile(r"\\(?:i*int|oint|sum|prod|lim)(?![a-z])")
_FUNCTION = re.compile(r"(?:arc)?(?:sin|cos|tan|sec|csc|cot)h?|log|ln|exp")


class _MathVerifyTimeoutNoise(logging.Filter):
    """Drops math-verify's "Timeout is disabled" warning: we disable its timeouts on purpose (see module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_MathVerifyTimeoutNoise())


# --------------------------------------------------------------------------------------------- extraction


def _tail(text: str) -> str:
    return text[-MAX_COMPLETION_CHARS:]


def _degenerate(text: str) -> bool:
    return text.count("<answer>") > _MAX_TAGS or text.count("<reasoning>") > _MAX_TAGS


def tag_answer(text: str) -> str | None:
    """Content of the last ``<answer>`` block (``None`` if absent or the text repeats tags degenerately)."""
    return None if _degenerate(text) else fmt.extract_answer(text)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces; ``None`` if absent or unbalanced."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = start + len("\\boxed")
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def last_number(text: str) -> str | None:
    """The last number in ``text`` (optional minus, thousands commas, decimals), as written; ``None`` if none."""
    tail = deque(_LAST_NUMBER.finditer(text), maxlen=1)  # streams: no list of every number in a long text
    return tail[0].group(0) if tail else None


def extract_math_answer(text: str) -> tuple[str | None, str]:
    """The final answer of a completion and the path that found it.

    Tries, in order: the last ``<answer>`` block (a ``\\boxed{}`` inside it is unwrapped), the last balanced
    ``\\boxed{}`` anywhere, the last number anywhere. An empty answer block falls through to the next path.

    Returns:
        ``(answer, how)`` with ``how`` one of :data:`EXTRACTION_PATHS`; ``(None, "none")`` when nothing found.
    """
    tagged = tag_answer(text)
    if tagged:
        return (last_boxed(tagged) or tagged), "answer_tag"
    boxed = last_boxed(text)
    if boxed:
        return boxed, "boxed"
    number = last_number(text)
    if number is not None:
        return number, "last_number"
    return None, "none"


# -------------------------------------------------------------------------------------------- equivalence


def as_plain_number(text: str) -> Fraction | None:
    """Exact value of a plain number (``$``, ``\\$``, ``\\!``, thousands commas, a trailing ``.`` allowed)."""
    s = text.strip().replace("\\!", "").replace("\\$", "").replace("$", "").strip().rstrip(".").strip()
    if len(s) > MAX_ANSWER_CHARS or not _PLAIN_NUMBER.fullmatch(s):
        return None
    return Fraction(s.replace(",", ""))


def is_plain_number(text: str) -> bool:
    """True for an int or decimal with optional sign and thousands commas, nothing else (no units, no ``$``)."""
    return bool(_PLAIN_NUMBER.fullmatch(text.strip()))


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]":
            depth = max(depth - 1, 0)
    return deepest


def too_risky(text: str) -> bool:
    """True for strings sympy could spend unbounded time on; these never match anything.

    Rejected: over :data:`MAX_ANSWER_CHARS` characters, brackets nested deeper than 8, a literal exponent of
    four or more digits or literal exponents whose product passes 10^6 (``((9^{999})^{999})^{999}``), a power
    inside an exponent (``10^{10^{10}}``, ``2**2**2``), a factorial of a four-digit number or of a bracketed
    expression, integrals / sums / products / limits, more than four function names (sin, log, ...). No GSM8K
    or MATH-500 gold answer is affected.
    """
    if len(text) > MAX_ANSWER_CHARS:
        return True
    # Spacing and digit grouping ("1,000,000!", "^ { 9999 }") must not hide a number from the checks below.
    compact = re.sub(r"\\[!,;: ]|[\s,]", "", text)
    exponents = [int(e) for e in _EXPONENT.findall(compact)]
    return (
        _nesting_depth(text) > _MAX_DEPTH
        or len(_FUNCTION.findall(text)) > _MAX_FUNCTIONS
        or any(e >= 1000 for e in exponents)
        or math.prod(exponents) > 10**6
        or any(p.search(compact) for p in (_POWER_TOWER, _BIG_FACTORIAL, _CALCULUS))
    )


@lru_cache(maxsize=4096)
def _parse_boxed(answer: str) -> tuple[Any, ...]:
    """math-verify parse of a bare answer; cached because the same gold is compared with G completions."""
    import math_verify

    # Wrapping in \boxed{} makes math-verify read the whole string as one LaTeX answer.
    return tuple(math_verify.parse("\\boxed{" + answer + "}", parsing_timeout=None))


@cache
def _warm_up() -> None:
    """Import math-verify and build its lazily made parsers once, outside any deadline (~1.5 s on a CPU)."""
    _parse_boxed("(1, \\frac{1}{2})")


def _math_verify_match(pred: str, gold: str, timeout_s: float) -> bool:
    import math_verify

    _warm_up()  # a first call must not spend its deadline on imports and grammar set-up

    def compare() -> bool:
        gold_parsed, pred_parsed = _parse_boxed(gold), _parse_boxed(pred)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(math_verify.verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))

    return bool(run_with_deadline(compare, timeout_s))


def answers_match(pred: str, gold: str, *, timeout_s: float = VERIFY_TIMEOUT_S) -> bool:
    """Whether a predicted final answer equals the gold one; never raises, bounded time.

    Two plain numbers (``"1,000"``, ``"$18."``, ``"0.50"``) compare exactly; otherwise math-verify decides
    (``"0.5"`` vs ``"\\frac{1}{2}"``, LaTeX tuples, intervals, expressions), after :func:`too_risky` screening.
    """
    try:
        pred, gold = pred.strip(), gold.strip()
        if not pred or not gold or len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
            return False
        if pred == gold:
            return True
        pred_num, gold_num = as_plain_number(pred), as_plain_number(gold)
        if pred_num is not None and gold_num is not None:
            return pred_num == gold_num
        if too_risky(pred) or too_risky(gold):
            return False
        return _math_verify_match(pred, gold, timeout_s)
    except Exception:  # sympy / latex2sympy raise anything from TypeError to RecursionError on odd input
        return False


# ------------------------------------------------------------------------------------------------ rewards


def reasoning_words(completion: str) -> int:
    """Length n of a completion's reasoning in whitespace-separated words.

    The reasoning is the ``<reasoning>`` block, or without one everything before the first ``<answer>`` tag.
    """
    block = None if _degenerate(completion) else fmt.extract_reasoning(completion)
    if block is None:
        block = completion.split("<answer>", 1)[0]
    return len(block.split())


def length_reward(n: int, target: int | None) -> float:
    """``max(0, 1 - |n - n*| / n*)``: 1 at the reference length, 0 at twice it or beyond; 0 without n*."""
    if not target or target <= 0:
        return 0.0
    return max(0.0, 1.0 - abs(n - target) / target)


def lcpo_exact(n: int, target: int | None, alpha: float) -> float:
    """LCPO-Exact length penalty ``-alpha * |n* - n|`` (words); 0 without n*."""
    if not target or target <= 0:
        return 0.0
    return 0.0 - alpha * abs(target - n)  # 0.0 - 0.0 is +0.0, not the -0.0 that logs oddly


def lcpo_max(correct: bool, n: int, target: int | None, alpha: float, beta: float) -> float:
    """LCPO-Max ``I(correct) * clip(alpha * (n* - n) + beta, 0, 1)`` (words); 0 without n*."""
    if not correct or not target or target <= 0:
        return 0.0
    return min(1.0, max(0.0, alpha * (target - n) + beta))


def score_math(
    completion: str,
    reference: Mapping[str, Any],
    *,
    lcpo_alpha: float = LCPO_ALPHA,
    lcpo_beta: float = LCPO_BETA,
) -> dict[str, float]:
    """All :data:`MATH_COMPONENTS` of one completion.

    Args:
        completion: the generated text (anything; never raises).
        reference: ``answer`` (gold final answer, str) and optionally ``ref_len`` (reasoning words of the
            reference solution, the n* of the length rewards; missing or ``None`` makes them 0).
        lcpo_alpha: slope per word of the LCPO components.
        lcpo_beta: offset of ``lcpo_max``.

    Returns:
        ``{component: value}`` in :data:`MATH_COMPONENTS` order. ``correctness`` uses every extraction path;
        ``is_number`` looks only at the ``<answer>`` block.
    """
    target = reference.get("ref_len")
    answer, _ = extract_math_answer(_tail(completion))
    correct = answer is not None and answers_match(answer, str(reference["answer"]))
    tagged = tag_answer(_tail(completion))
    n = reasoning_words(completion)
    degenerate = _degenerate(completion)
    return {
        "correctness": float(correct),
        "strict_format": 0.0 if degenerate else fmt.strict_format(completion),
        "soft_format": 0.0 if degenerate else fmt.soft_format(completion),
        "is_number": float(tagged is not None and is_plain_number(tagged)),
        "length": length_reward(n, target),
        "lcpo_exact": lcpo_exact(n, target, lcpo_alpha),
        "lcpo_max": lcpo_max(correct, n, target, lcpo_alpha, lcpo_beta),
    }


def judge_math(
    completion: str,
    reference: Mapping[str, Any],
    *,
    lcpo_alpha: float = LCPO_ALPHA,
    lcpo_beta: float = LCPO_BETA,
) -> Judgement:
    """Components (:func:`score_math`), verdict (:data:`VERDICTS`) and the extracted answer of one completion.

    ``detail``: ``answer`` (first 100 characters), ``path`` (:data:`EXTRACTION_PATHS`), ``formatted`` (the
    answer sits in the required format: strict), ``gold``, and ``fallback_correct`` (the last number of the
    completion alone equals the gold answer, whatever the tags say: lm-evaluation-harness's flexible extract).
    """
    comps = score_math(completion, reference, lcpo_alpha=lcpo_alpha, lcpo_beta=lcpo_beta)
    gold = str(reference["answer"])
    answer, path = extract_math_answer(_tail(completion))
    fallback = last_number(_tail(completion))
    detail = {
        "answer": None if answer is None else answer[:100], "path": path, "gold": gold[:100],
        "formatted": path in FORMATTED_PATHS,
        "fallback_correct": fallback is not None and answers_match(fallback, gold),
    }  # fmt: skip
    if comps["correctness"] == 1.0:
        return Judgement(comps, CORRECT, None, detail)
    if path == "none":
        return Judgement(comps, "no_answer", "no final answer found", detail)
    verdict = "wrong_answer" if path in FORMATTED_PATHS else "format_error"
    return Judgement(
        comps, verdict, f"extracted {detail['answer']!r} ({path}), gold {detail['gold']!r}", detail
    )
