"""Math verifier (extraction, equivalence, reward components, hostile input) and MathTask (generator, loaders)."""

from __future__ import annotations

import gc
import gzip
import json
import re
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from rlvr.domains.base import DataError, Example, Task
from rlvr.domains.math.deadline import run_with_deadline
from rlvr.domains.math.generator import LEVELS, generate_problem, is_val_problem
from rlvr.domains.math.task import MathTask
from rlvr.domains.math.verify import (
    MATH_COMPONENTS,
    answers_match,
    extract_math_answer,
    is_plain_number,
    lcpo_exact,
    lcpo_max,
    length_reward,
    reasoning_words,
    score_math,
    too_risky,
)

GOOD = "<reasoning>\n7 + 5 = 12\n</reasoning>\n<answer>\n12\n</answer>"

# ------------------------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    "text, answer, how",
    [
        (GOOD, "12", "answer_tag"),
        ("<answer>\\boxed{42}</answer>", "42", "answer_tag"),
        ("<answer>1</answer> then <answer> 2 </answer>", "2", "answer_tag"),
        ("so \\boxed{\\frac{1}{2}} and then 7", "\\frac{1}{2}", "boxed"),
        ("\\boxed{a} then \\boxed {\\{1,2\\}}", "\\{1,2\\}", "boxed"),
        ("\\boxed{3} and \\boxed{unbalanced", "3", "last_number"),  # the last box is broken: numbers decide
        ("12 - 5 = 7.", "7", "last_number"),
        ("the total is 1,000,000 apples", "1,000,000", "last_number"),
        ("it is -3", "-3", "last_number"),
        ("x-3", "3", "last_number"),
        ("it costs 2.50 dollars", "2.50", "last_number"),
        ("<answer>\n\n</answer> so 4", "4", "last_number"),
        ("no digits here", None, "none"),
        ("", None, "none"),
    ],
)
def test_extract_math_answer(text, answer, how):
    assert extract_math_answer(text) == (answer, how)


@pytest.mark.parametrize(
    "text, expected",
    [("12", True), ("-3", True), ("+3", True), ("1,000", True), ("3.25", True), (".5", True), (" 7 ", True),
     ("1,00", False), ("$12", False), ("12 apples", False), ("\\frac{1}{2}", False), ("", False),
     ("1e5", False), ("1.2.3", False)],
)  # fmt: skip
def test_is_plain_number(text, expected):
    assert is_plain_number(text) is expected


# ----------------------------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("18", "18"),
        ("1,000", "1000"),
        ("$18", "18"),
        ("18.", "18"),
        ("18.00", "18"),
        ("+5", "5"),
        ("10080", "10,\\!080"),  # MATH-500 writes thousands with \!
        ("\\$32,348", "\\$32,\\!348"),
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac{1}{2}", "0.5"),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),  # MATH-500 tuple
        ("p - q", "p-q"),
        ("\\text{(C)}", "\\text{(C)}"),
    ],
)
def test_answers_match_equal(pred, gold):
    assert answers_match(pred, gold)


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("17", "18"),
        ("-18", "18"),
        ("1,00", "100"),  # not a thousands grouping: not read as 100
        ("", "5"),
        ("5", ""),
        ("18 dollars", "18"),  # units make it no plain number (as the GSM8K GRPO report's exact match)
        ("(3, \\pi)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("q - p", "p - q"),
        ("\\frac{1}{3}", "0.5"),
    ],
)
def test_answers_match_different(pred, gold):
    assert not answers_match(pred, gold)


# ---------------------------------------------------------------------------------------- reward components


@pytest.mark.parametrize(
    "n, target, expected",
    [
        (5, 5, 1.0),
        (7, 5, 0.6),
        (3, 5, 0.6),
        (10, 5, 0.0),
        (20, 5, 0.0),
        (0, 5, 0.0),
        (5, None, 0.0),
        (5, 0, 0.0),
    ],
)
def test_length_reward(n, target, expected):
    assert length_reward(n, target) == pytest.approx(expected)


@pytest.mark.parametrize(
    "n, target, alpha, expected",
    [
        (5, 5, 0.01, 0.0),
        (7, 5, 0.01, -0.02),
        (3, 5, 0.01, -0.02),
        (105, 5, 0.003, -0.3),
        (5, None, 0.01, 0.0),
    ],
)
def test_lcpo_exact(n, target, alpha, expected):
    assert lcpo_exact(n, target, alpha) == pytest.approx(expected)


@pytest.mark.parametrize(
    "correct, n, target, alpha, beta, expected",
    [
        (True, 5, 5, 0.01, 0.5, 0.5),
        (True, 30, 10, 0.01, 0.5, 0.3),  # 0.01 * -20 + 0.5
        (True, 60, 10, 0.01, 0.5, 0.0),  # 0.01 * -50 + 0.5 = 0
        (True, 100, 10, 0.01, 0.5, 0.0),  # clipped from -0.4
        (True, 0, 100, 0.01, 0.5, 1.0),  # clipped from 1.5
        (True, 4, 10, 0.1, 0.2, 0.8),  # 0.1 * 6 + 0.2
        (False, 5, 5, 0.01, 0.5, 0.0),
        (True, 5, None, 0.01, 0.5, 0.0),
    ],
)
def test_lcpo_max(correct, n, target, alpha, beta, expected):
    assert lcpo_max(correct, n, target, alpha, beta) == pytest.approx(expected)


@pytest.mark.parametrize(
    "completion, expected_words",
    [(GOOD, 5), ("7 + 5 = 12 <answer>12</answer>", 5), ("<reasoning> a b </reasoning> c d", 2), ("", 0)],
)
def test_reasoning_words(completion, expected_words):
    assert reasoning_words(completion) == expected_words


REF = {"answer": "12", "ref_len": 5}
# columns: correctness, strict_format, soft_format, is_number, length, lcpo_exact, lcpo_max (alpha .01, beta .5)
SCORE_TABLE = [
    (GOOD, REF, (1, 1, 1, 1, 1.0, 0.0, 0.5)),
    # wrong answer, 7 reasoning words: length 1 - 2/5, lcpo_exact -0.01 * 2, lcpo_max needs correctness
    ("<reasoning>\n7 + 5 = 13 so yes\n</reasoning>\n<answer>\n13\n</answer>", REF, (0, 1, 1, 1, 0.6, -0.02, 0.0)),
    # no newlines around the blocks: soft but not strict
    ("<reasoning>7 + 5 = 12</reasoning> <answer>12</answer>", REF, (1, 0, 1, 1, 1.0, 0.0, 0.5)),
    # no tags: last-number fallback is correct; the whole text is the reasoning
    ("7 + 5 = 12", REF, (1, 0, 0, 0, 1.0, 0.0, 0.5)),
    # "$12" matches but is no plain number; 10 words: length 0, lcpo_exact -0.05, lcpo_max 0.01 * -5 + 0.5
    ("<reasoning>\na b c d e f g h i j\n</reasoning>\n<answer>\n$12\n</answer>", REF, (1, 1, 1, 0, 0.0, -0.05, 0.45)),
    # no reference length: every length component is 0
    (GOOD, {"answer": "12"}, (1, 1, 1, 1, 0.0, 0.0, 0.0)),
    (GOOD, {"answer": "12", "ref_len": None}, (1, 1, 1, 1, 0.0, 0.0, 0.0)),
    # LaTeX gold through math-verify
    ("<reasoning>\nhalf\n</reasoning>\n<answer>\n0.5\n</answer>", {"answer": "\\frac{1}{2}", "ref_len": 2},
     (1, 1, 1, 1, 0.5, -0.01, 0.51)),
]  # fmt: skip


@pytest.mark.parametrize("completion, reference, expected", SCORE_TABLE)
def test_score_math_components(completion, reference, expected):
    scores = score_math(completion, reference, lcpo_alpha=0.01, lcpo_beta=0.5)
    assert tuple(scores) == MATH_COMPONENTS
    assert tuple(scores.values()) == pytest.approx(expected)


# ------------------------------------------------------------------------------------------- hostile input

# Each of these would hang sympy (most inside one C call that no deadline can interrupt): caps reject them.
RISKY_ANSWERS = [
    "10^10^10",
    "10^{10^{10}}",
    "9^{9^{9^9}}",
    "99999999999^{99999999}",
    "((9^{999})^{999})^{999}",
    "9^ { 9999 }",
    "2**2**2**2**2**2",
    "1000000!",
    "1,000,000!",
    "(10^{100000})!",
    "\\int_0^{1} x^{9999} e^{x} dx",
    "\\sin(\\sin(\\sin(\\sin(\\sin(\\sin(\\sin(1)))))))",
    "\\frac{" * 500,
    "{" * 100 + "1" + "}" * 100,
    "1" * 5000,
]
HOSTILE_ANSWERS = RISKY_ANSWERS + ["}{" * 60, "\\boxed{", "\\frac{1}{"]
HOSTILE_COMPLETIONS = [
    "<answer>" * 12500,  # format.py's lazy regexes are quadratic in repeated opening tags
    "<reasoning>" * 9000,
    "<reasoning>x</reasoning><answer>" * 3000,
    "\\boxed{" * 14000,
    "{" * 100_000,
    "1" * 100_000,
    "9," * 50_000,
    "x" * 100_000,
    "<reasoning>\n" + "a " * 50_000,
] + [f"<reasoning>\nhm\n</reasoning>\n<answer>\n{a}\n</answer>" for a in HOSTILE_ANSWERS]


def _score_hostile_inputs() -> float:
    """Seconds for the slowest call over every hostile input (raises if any call raises)."""
    slowest = 0.0
    for text in HOSTILE_ANSWERS:
        start = time.perf_counter()
        assert not answers_match(text, "5") and not answers_match("5", text)
        slowest = max(slowest, time.perf_counter() - start)
    for text in HOSTILE_COMPLETIONS:
        start = time.perf_counter()
        scores = score_math(text, {"answer": "5", "ref_len": 3})
        assert tuple(scores) == MATH_COMPONENTS and scores["correctness"] == 0.0
        slowest = max(slowest, time.perf_counter() - start)
    return slowest


def test_hostile_inputs_are_rejected_quickly():
    assert all(too_risky(a) for a in RISKY_ANSWERS)
    assert _score_hostile_inputs() < 1.0


def test_hostile_inputs_off_the_main_thread():
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["slowest"] = _score_hostile_inputs()
        except BaseException as e:  # surface the failure in the main thread
            result["error"] = e

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "scoring hung in a worker thread"
    assert "error" not in result, result.get("error")
    assert result["slowest"] < 1.0


@pytest.mark.parametrize("in_thread", [False, True])
def test_deadline_bounds_sympy_in_any_thread(in_thread):
    # 12 characters that pass every cap yet never finish expanding: only the deadline stops it.
    # CPU time of the verifying thread, so a busy machine (CI next to a training run) does not count: what
    # is bounded is the work done after the 0.3 s deadline, not how long the scheduler kept the thread waiting
    def work() -> tuple[bool, float]:
        start = time.thread_time()
        return answers_match("(x+y+z)^{99}", "5", timeout_s=0.3), time.thread_time() - start

    if in_thread:
        out: list[tuple[bool, float]] = []
        worker = threading.Thread(target=lambda: out.append(work()), daemon=True)
        worker.start()
        worker.join(timeout=20)
        matched, seconds = out[0]
    else:
        matched, seconds = work()
    assert not matched and seconds < 3.0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_deadline_swallowed_by_a_finalizer_is_raised_again():
    # The garbage collector runs other objects' __del__ in whatever thread allocates; a deadline that lands
    # there is printed and dropped by Python. Seen in the full suite: a 0.3 s deadline ran for 10 s.
    class Slow:
        def __init__(self) -> None:
            self.cycle = self

        def __del__(self) -> None:
            end = time.perf_counter() + 0.005
            while time.perf_counter() < end:
                pass

    def spin_among_garbage() -> None:
        while True:
            for _ in range(10):
                Slow()
            gc.collect()
            end = time.perf_counter() + 0.02
            while time.perf_counter() < end:
                pass

    start = time.thread_time()
    assert run_with_deadline(spin_among_garbage, 0.3) is None
    assert time.thread_time() - start < 3.0


def test_run_with_deadline_never_leaks_the_exception():
    def spin() -> int:
        while True:
            pass

    start = time.perf_counter()
    assert run_with_deadline(spin, 0.05) is None
    assert time.perf_counter() - start < 2.0
    # Deadlines racing with completion must neither raise nor fire later in unrelated code.
    for _ in range(300):
        assert run_with_deadline(lambda: sum(range(200)), 0.0001) in (None, 19900)
    time.sleep(0.05)
    assert run_with_deadline(lambda: 7, 5.0) == 7
    # fn's own error propagates, and its watchdog is stopped: nothing lands after the deadline
    with pytest.raises(ZeroDivisionError):
        run_with_deadline(lambda: 1 / 0, 0.05)
    time.sleep(0.2)
    assert sum(range(10**6)) > 0


# ------------------------------------------------------------------------------------------------ generator

_EQUATION = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+)$")
_OPS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: Fraction(a, b),
}


@pytest.mark.parametrize("difficulty", sorted(LEVELS))
def test_generated_answers_follow_from_their_equations(difficulty):
    level = LEVELS[difficulty]
    ops_seen = set()
    for i in range(150):
        p = generate_problem(3, "train", i, difficulty)
        question_numbers = {int(x) for x in re.findall(r"\d+", p.question)}
        known, result = set(question_numbers), None
        for line in p.reasoning.splitlines():
            a, op, b, c = _EQUATION.match(line).groups()
            assert int(a) in known and int(b) in known, (line, p.question)
            assert _OPS[op](int(a), int(b)) == int(c) >= 0, line  # exact, integral, non-negative
            known.add(int(c))
            result, ops_seen = int(c), ops_seen | {op}
        assert result == p.answer
        assert max(question_numbers) <= max(level.max_n, 9)
        assert p.question.endswith("?")
    if difficulty <= 2:
        assert ops_seen == {"+", "-"}
    if difficulty >= 5:
        assert ops_seen == {"+", "-", "*", "/"}


def test_generator_is_deterministic_and_splits_are_disjoint():
    assert generate_problem(0, "train", 5) == generate_problem(0, "train", 5)
    assert generate_problem(0, "train", 5) != generate_problem(1, "train", 5)
    train = [generate_problem(0, "train", i, 2) for i in range(400)]
    val = [generate_problem(0, "val", i, 2) for i in range(100)]
    assert not any(is_val_problem(p.key) for p in train) and all(is_val_problem(p.key) for p in val)
    assert not {p.key for p in train} & {p.key for p in val}


def test_difficulty_one_is_small():
    for i in range(200):
        p = generate_problem(0, "train", i, 1)
        assert 1 <= len(p.reasoning.splitlines()) <= 2
        assert all(int(x) <= 20 for x in re.findall(r"\d+", p.question))


def test_generated_task_examples():
    task = MathTask(num_train=50, num_val=20, seed=1)
    assert isinstance(task, Task)
    train, val = task.examples("train"), task.examples("val")
    assert (len(train), len(val)) == (50, 20) and task.examples("train") is train
    ex = train[0]
    assert isinstance(ex, Example) and ex.task == "math" and ex.uid == "generated/train/0"
    assert [m["role"] for m in ex.messages] == ["system", "user"]
    assert ex.reference["ref_len"] == len(ex.solution.split("</reasoning>")[0].split()) - 1  # minus the tag
    for e in train + val:
        assert task.score(e.solution, e.reference) == {
            "correctness": 1.0, "strict_format": 1.0, "soft_format": 1.0, "is_number": 1.0,
            "length": 1.0, "lcpo_exact": 0.0, "lcpo_max": 0.5,
        }  # fmt: skip
    assert [e.solution for e in MathTask(num_train=50, seed=1).examples("train")] == [
        e.solution for e in train
    ]


def test_task_config_checks():
    assert MathTask(weights={"lcpo_max": 1.0}).weights["correctness"] == 2.0
    assert MathTask(weights={"lcpo_max": 1.0}).weights["lcpo_max"] == 1.0
    with pytest.raises(ValueError, match="math weights name unknown component"):
        MathTask(weights={"accuracy": 1.0})
    with pytest.raises(ValueError, match="difficulty"):
        MathTask(difficulty=9)
    with pytest.raises(ValueError, match="split"):
        MathTask(num_train=1).examples("test")


# ------------------------------------------------------------------------------------------- real datasets


def test_gsm8k_local(shared_data):
    task = MathTask(source="gsm8k", path=str(shared_data / "gsm8k"))
    train, val = task.examples("train"), task.examples("val")
    assert (len(train), len(val)) == (7473, 1319)
    first = val[0]
    assert first.uid == "gsm8k/test/0" and first.reference["answer"] == "18"
    assert "Janet" in first.messages[1]["content"] and "<<" not in first.solution
    assert first.solution.endswith("<answer>\n18\n</answer>")
    for ex in val[:200]:
        assert task.score(ex.solution, ex.reference)["correctness"] == 1.0, ex.uid
        wrong = ex.solution.replace(
            f"<answer>\n{ex.reference['answer']}", f"<answer>\n{int(ex.reference['answer']) + 1}"
        )
        assert task.score(wrong, ex.reference)["correctness"] == 0.0, ex.uid
    assert (
        len(MathTask(source="gsm8k", path=str(shared_data / "gsm8k"), num_train=10).examples("train")) == 10
    )


def test_math500_local(shared_data):
    path = str(shared_data / "math500" / "test.jsonl.gz")
    task = MathTask(source="math500", path=path)
    train, val = task.examples("train"), task.examples("val")
    assert (len(train), len(val)) == (400, 100)
    assert not {e.uid for e in train} & {e.uid for e in val}
    assert "math500/test/precalculus/807" in {e.uid for e in train + val}
    again = MathTask(source="math500", path=str(shared_data / "math500"))  # a directory works too
    assert [e.uid for e in again.examples("val")] == [e.uid for e in val]
    assert [e.uid for e in MathTask(source="math500", path=path, seed=1).examples("val")] != [
        e.uid for e in val
    ]
    for ex in val[:50]:
        scores = task.score(ex.solution, ex.reference)
        assert scores["correctness"] == scores["strict_format"] == 1.0, ex.uid
    assert not any(too_risky(e.reference["answer"]) for e in train + val)  # the caps spare every gold answer


# ---------------------------------------------------------------------------------------------- data errors


def _write_jsonl(path: Path, records: list) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def _one_line_error(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_source_and_misplaced_path():
    assert "unknown math source" in _one_line_error(lambda: MathTask(source="aime"))
    assert "path" in _one_line_error(lambda: MathTask(source="generated", path="x.jsonl"))


def test_missing_local_path(tmp_path):
    task = MathTask(source="gsm8k", path=str(tmp_path / "nope.jsonl"))
    assert "not found" in _one_line_error(lambda: task.examples("train"))
    task = MathTask(source="gsm8k", path=str(tmp_path))  # a directory without train/test files
    assert "train" in _one_line_error(lambda: task.examples("train"))


def test_hub_id_offline(monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    # Both libraries read the offline flag at import; without it the hub client retries for ~25 s.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    task = MathTask(source="gsm8k", path="rlvr-tests/no-such-dataset")
    assert "offline?" in _one_line_error(lambda: task.examples("train"))


@pytest.mark.parametrize(
    "source, record, needle",
    [
        ("gsm8k", {"question": "q?"}, "missing field(s) ['answer']"),
        ("gsm8k", {"question": "q?", "answer": "it is 4"}, "####"),
        ("gsm8k", {"question": "q?", "answer": "so\n#### "}, "empty final answer"),
        ("gsm8k", '{"question": "q?", "answer": ', "malformed JSON"),
        ("math500", {"problem": "p", "solution": "s"}, "missing field(s) ['answer']"),
        ("math500", {"problem": "p", "solution": "s", "answer": " "}, "empty 'answer'"),
    ],
)
def test_malformed_records(tmp_path, source, record, needle):
    split_file = "train" if source == "gsm8k" else "test"
    _write_jsonl(tmp_path / f"{split_file}.jsonl.gz", [record])
    task = MathTask(source=source, path=str(tmp_path), num_val=0)
    assert needle in _one_line_error(lambda: task.examples("train"))


def test_a_huge_completion_is_judged_on_its_tail_in_bounded_time():
    import time

    from rlvr.domains.math.verify import MAX_COMPLETION_CHARS, judge_math

    junk = "1 + (" * 500_000  # 2.5 MB of numbers and unbalanced parentheses
    start = time.perf_counter()
    j = judge_math(junk + "<answer>\n42\n</answer>", {"answer": "42"})
    assert time.perf_counter() - start < 5.0
    assert j.verdict == "correct"
    lost = judge_math("<answer>42</answer>" + "x" * (MAX_COMPLETION_CHARS + 1), {"answer": "42"})
    assert lost.verdict != "correct"  # an answer buried before the last MAX_COMPLETION_CHARS is not read


def test_generated_val_problems_are_distinct_while_the_level_has_enough():
    val = MathTask(num_val=200).examples("val")
    keys = [(e.messages[1]["content"], e.reference["answer"]) for e in val]
    assert len(val) == 200 and len(set(keys)) == 200
    assert len({e.solution for e in val}) == 200  # the equations differ, not just the names around them
    assert not {e.uid for e in val} & {e.uid for e in MathTask(num_train=500).examples("train")}
