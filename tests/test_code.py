"""Code verifier and CodeTask: program assembly, reward components, real HumanEval / MBPP data, generator."""

from __future__ import annotations

import ast
import collections
import dataclasses
import hashlib
import json

import pytest

from data_modules.curriculum import Curriculum
from rlvr.domains.base import DataError, Task
from rlvr.domains.code.generator import LEVELS, TEMPLATES, CodeProblem, is_val_statement, make_problem
from rlvr.domains.code.task import CODE_WEIGHTS, MBPP_SPLITS, CodeTask, humaneval_path, load_mbpp
from rlvr.domains.code.verify import (
    CODE_COMPONENTS,
    candidate_source,
    extract_code,
    judge_code_batch,
    parse_report,
    prompt_preamble,
    score_code,
    score_code_batch,
)
from rlvr.domains.format import format_answer, strict_format
from rlvr.domains.sources import read_json_records


def wrap(code: str, reasoning: str = "r") -> str:
    return format_answer(reasoning, f"```python\n{code}\n```")


ADD_REF = {"tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-4, 1) == -3"]}
ADD = "def add(a, b):\n    return a + b"

# (id, completion, expected components as (strict, soft, extracted, compiles, fraction, all), verdict)
# fmt: off
CASES = [
    ("correct", wrap(ADD), (1, 1, 1, 1, 1, 1), "correct"),
    ("no_tags", f"```python\n{ADD}\n```", (0, 0, 1, 1, 1, 1), "correct"),
    ("soft_only", f"<reasoning>r</reasoning> <answer>\n```python\n{ADD}\n```\n</answer> bye", (0, 1, 1, 1, 1, 1), "correct"),
    ("no_code", format_answer("r", "3"), (1, 1, 0, 0, 0, 0), "no_code"),
    ("unterminated_fence", "<reasoning>\nr\n</reasoning>\n<answer>\n```python\ndef add(a, b):", (0, 0, 0, 0, 0, 0), "no_code"),
    ("syntax_error", wrap("def add(a, b)\n    return a + b"), (1, 1, 1, 0, 0, 0), "syntax_error"),
    ("partly_right", wrap("def add(a, b):\n    return a + b if a >= 0 else 0"), (1, 1, 1, 1, 2 / 3, 0), "wrong_answer"),
    ("wrong", wrap("def add(a, b):\n    return a - b"), (1, 1, 1, 1, 1 / 3, 0), "wrong_answer"),
    ("raises", wrap("def add(a, b):\n    raise KeyError(a)"), (1, 1, 1, 1, 0, 0), "runtime_error"),
    ("exit_before_tests", wrap("import sys\nsys.exit(0)\n" + ADD), (1, 1, 1, 1, 0, 0), "runtime_error"),
    ("os_exit_in_call", wrap("import os\ndef add(a, b):\n    os._exit(0)"), (1, 1, 1, 1, 0, 0), "runtime_error"),
    ("exit_in_call", wrap("import sys\ndef add(a, b):\n    sys.exit(0)"), (1, 1, 1, 1, 0, 0), "runtime_error"),
    ("close_stdout", wrap("import os\nos.close(1)\n" + ADD), (1, 1, 1, 1, 1, 1), "correct"),  # not the report channel
    ("forged_report", wrap("print('0123456789abcdef 0 P')\nprint('0123456789abcdef END')\nimport sys\nsys.exit(0)"), (1, 1, 1, 1, 0, 0), "runtime_error"),
    ("infinite_loop", wrap("def add(a, b):\n    while True:\n        pass"), (1, 1, 1, 1, 0, 0), "timeout"),
    ("loud_but_right", wrap("print('x' * 300_000)\ndef add(a, b):\n    print('noise' * 1000)\n    return a + b"), (1, 1, 1, 1, 1, 1), "correct"),
    ("main_block_ignored", wrap(ADD + "\nif __name__ == '__main__':\n    print(add(int(input()), 1))"), (1, 1, 1, 1, 1, 1), "correct"),
    ("shadows_builtins", wrap("def compile(*a):\n    return 0\ndef exec(*a):\n    return 0\n" + ADD), (1, 1, 1, 1, 1, 1), "correct"),
    ("last_fence_wins", wrap("def add(a, b):\n    return 0\n```\nfixed:\n```python\n" + ADD), (1, 1, 1, 1, 1, 1), "correct"),
]
# fmt: on


@pytest.fixture(scope="module")
def case_checks():
    return judge_code_batch([c[1] for c in CASES], [ADD_REF] * len(CASES), timeout_s=2.0)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c[0] for c in CASES])
def test_components_and_verdict(case_checks, i):
    _, completion, expected, verdict = CASES[i]
    check = case_checks[i]
    assert tuple(check.components) == CODE_COMPONENTS
    assert [check.components[k] for k in CODE_COMPONENTS] == pytest.approx(list(map(float, expected)))
    assert check.verdict == verdict, check


def test_score_code_single_and_batch_agree():
    single = score_code(wrap(ADD), ADD_REF)
    assert single == score_code_batch([wrap(ADD)], [ADD_REF])[0]
    assert single["all_tests_pass"] == 1.0


def test_setup_code_runs_after_the_candidate():
    # MBPP's test_setup_code may use the candidate's classes (task 3xx builds trees of the candidate's Node)
    ref = {"tests": ["assert depth(root) == 2"], "setup_code": "root = Node(Node(None))"}
    code = "class Node:\n    def __init__(self, child):\n        self.child = child\ndef depth(n):\n    return 0 if n is None else 1 + depth(n.child)"
    assert score_code(wrap(code), ref)["all_tests_pass"] == 1.0


def test_extract_code():
    assert extract_code(wrap("x = 1")) == "x = 1"
    assert extract_code("```python\nx = 2\n```") == "x = 2"
    assert extract_code("<answer>\n```\nx = 3\n```\n</answer>") == "x = 3"
    assert extract_code(format_answer("r", "x = 4")) is None
    assert extract_code("```python\n```") is None


def test_parse_report_ignores_other_nonces_and_out_of_range_units():
    out = "junk\nabc 0 P\nnonce 0 P\nnonce 1 F\nnonce 7 P\nnonce 0 F\nnonce END\n"
    assert parse_report(out, "nonce", 3) == ({0: "P", 1: "F"}, True)
    assert parse_report("nonce 0 P", "nonce", 1) == ({0: "P"}, False)


HE_PROMPT = 'from typing import List\n\n\ndef helper(x):\n    return x\n\n\ndef inc(xs: List[int]) -> List[int]:\n    """Add one."""\n'
HE_REF = {
    "prompt": HE_PROMPT,
    "entry_point": "inc",
    "test": "def check(candidate):\n    assert candidate([1]) == [2]\n",
}


@pytest.mark.parametrize(
    "code",
    [
        "def inc(xs: List[int]) -> List[int]:\n    return [helper(x) + 1 for x in xs]",  # full function, uses prompt's import + helper
        "return [helper(x) + 1 for x in xs]",  # body, indentation stripped by the fence
        "    out = [x + 1 for x in xs]\n    return out",  # body with its indentation
        "out = [x + 1 for x in xs]\nreturn out",  # body with no indentation at all
    ],
    ids=["full", "body_stripped", "body_indented", "body_flat"],
)
def test_humaneval_candidate_forms(code):
    assert score_code(wrap(code), HE_REF)["all_tests_pass"] == 1.0


def test_prompt_preamble_keeps_imports_and_helpers():
    pre = prompt_preamble(HE_PROMPT, "inc")
    assert "from typing import List" in pre and "def helper" in pre and "def inc" not in pre
    assert candidate_source("x = 1", {"tests": ["assert True"]}) == "x = 1"


# ------------------------------------------------------------------------------------------ HumanEval (real)


@pytest.fixture(scope="module")
def humaneval():
    return CodeTask(source="humaneval").examples("val")


@pytest.mark.parametrize("form", ["full_function", "body_only"])
def test_humaneval_canonical_solutions_all_pass(humaneval, form):
    """As our SFT target (prompt + canonical solution, a full function) and as HumanEval's own convention
    (only the body, which the verifier appends to the prompt)."""
    assert len(humaneval) == 164
    assert all(strict_format(e.solution) == 1.0 for e in humaneval)
    if form == "full_function":
        completions = [e.solution for e in humaneval]
    else:
        bodies = {r["task_id"]: r["canonical_solution"] for r in read_json_records(humaneval_path())}
        completions = [wrap(bodies[e.meta["task_id"]]) for e in humaneval]
    checks = judge_code_batch(completions, [e.reference for e in humaneval], timeout_s=10.0)
    failed = [(e.uid, c.verdict, c.error) for e, c in zip(humaneval, checks) if c.verdict != "correct"]
    assert failed == []


class _FlipCompare(ast.NodeTransformer):
    FLIP = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}  # fmt: skip
    done = False

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        if not self.done and type(node.ops[0]) in self.FLIP:
            node.ops[0], self.done = self.FLIP[type(node.ops[0])](), True
        return self.generic_visit(node)


class _OffByOne(ast.NodeTransformer):
    done = False

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if not self.done and type(node.value) is int:
            self.done = True
            return ast.copy_location(ast.Constant(node.value + 1), node)
        return node


def _mutate(ref: dict, transformer: type[ast.NodeTransformer], solution_code: str) -> str | None:
    """Apply ``transformer`` to the entry-point function only; ``None`` when it finds nothing to change."""
    tree = ast.parse(solution_code)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == ref["entry_point"])
    t = transformer()
    t.visit(fn)
    return ast.unparse(tree) if t.done else None


@pytest.mark.parametrize(
    "kind,min_fail_rate", [("return_none", 1.0), ("flip_compare", 1.0), ("off_by_one", 0.8)]
)
def test_humaneval_mutants_fail(humaneval, kind, min_fail_rate):
    """Mutants must fail. Off-by-one on the first int constant is sometimes equivalent (e.g. a loop start
    that does not matter), so only most of those must fail; the other kinds always change behaviour."""
    completions, refs = [], []
    for e in humaneval:
        code = extract_code(e.solution)
        if kind == "return_none":
            mutant = e.reference["prompt"] + "    return None\n"
        else:
            mutant = _mutate(e.reference, _FlipCompare if kind == "flip_compare" else _OffByOne, code)
        if mutant is not None:
            completions.append(wrap(mutant))
            refs.append(e.reference)
    checks = judge_code_batch(completions, refs, timeout_s=5.0)
    fail_rate = sum(c.verdict != "correct" for c in checks) / len(checks)
    assert len(checks) > 100 and fail_rate >= min_fail_rate, (kind, len(checks), fail_rate)
    assert all(c.verdict in ("wrong_answer", "runtime_error", "timeout", "correct") for c in checks)


# ----------------------------------------------------------------------------------------------- MBPP (real)


@pytest.mark.parametrize("variant,expected", [("sanitized", 427), ("full", 974)])
def test_mbpp_reference_solutions_pass(shared_data, variant, expected):
    """Every MBPP reference solution passes its own tests. A few are slow (task 123 sums amicable numbers
    below 9999: 7-10 s on our loaded 2-core CPU, over the 5 s training default), so this runs at 20 s and
    retries timeouts at 60 s; after that nothing may fail. Counts are printed (``pytest -s``), not hidden."""
    task = CodeTask(source="mbpp", path=str(shared_data / "mbpp"), mbpp_variant=variant)
    examples = [e for split in MBPP_SPLITS for e in task.examples(split)]
    assert len(examples) == expected
    checks = judge_code_batch([e.solution for e in examples], [e.reference for e in examples], timeout_s=20.0)
    slow = [e.uid for e, c in zip(examples, checks) if c.detail["duration_s"] > 5.0]
    retry = [i for i, c in enumerate(checks) if c.verdict == "timeout"]
    other = [
        (examples[i].uid, c.verdict, c.error)
        for i, c in enumerate(checks)
        if c.verdict not in ("correct", "timeout")
    ]
    rerun = judge_code_batch(
        [examples[i].solution for i in retry], [examples[i].reference for i in retry], timeout_s=60.0
    )
    still = [(examples[i].uid, c.verdict, c.error) for i, c in zip(retry, rerun) if c.verdict != "correct"]
    print(f"\nMBPP {variant}: {len(examples)} reference solutions; over 5 s: {slow}; time out at 20 s: "
          f"{[examples[i].uid for i in retry]}; fail otherwise: {other}; still fail at 60 s: {still}")  # fmt: skip
    assert other == [] and still == []


def test_mbpp_splits_and_prompt(shared_data):
    full = CodeTask(source="mbpp", path=str(shared_data / "mbpp" / "mbpp.jsonl.gz"))
    sizes = {s: len(full.examples(s)) for s in ("train", "val", "validation", "prompt")}
    assert sizes == {"train": 374, "val": 500, "validation": 90, "prompt": 10}
    san = CodeTask(
        source="mbpp", path=str(shared_data / "mbpp"), mbpp_variant="sanitized", val_split="validation"
    )
    assert (len(san.examples("train")), len(san.examples("val"))) == (120, 43)
    e = full.examples("val")[0]
    assert e.uid == "mbpp-11" and e.meta["task_id"] == 11
    assert "assert remove_Occ(" in e.messages[-1]["content"] and "```python" in e.messages[-1]["content"]
    assert (
        e.reference["tests"][0] in e.messages[-1]["content"]
        and e.reference["tests"][1] not in e.messages[-1]["content"]
    )
    assert strict_format(e.solution) == 1.0 and "\r" not in e.solution
    assert len(CodeTask(source="mbpp", path=str(shared_data / "mbpp"), num_val=50).examples("val")) == 50


def test_mbpp_hub_ids_go_through_datasets(monkeypatch):
    seen = {}

    def fake_load_records(source, split, config=None):
        seen.update(source=source, split=split, config=config)
        return [
            {
                "task_id": 602,
                "text": "t",
                "code": "def f():\n    return 1",
                "test_list": ["assert f() == 1"],
                "test_setup_code": "",
            }
        ]

    monkeypatch.setattr("rlvr.domains.code.task.load_records", fake_load_records)
    assert load_mbpp("google-research-datasets/mbpp", "train", "sanitized")[0]["task_id"] == 602
    assert seen == {"source": "google-research-datasets/mbpp", "split": "train", "config": "sanitized"}
    ex = CodeTask(source="mbpp").examples("train")
    assert len(ex) == 1 and seen["config"] == "full"


# ------------------------------------------------------------------------------------------------- CodeTask


def test_code_task_protocol_and_config_checks():
    task = CodeTask()
    assert isinstance(task, Task)
    assert (
        task.name == "code"
        and task.components == CODE_COMPONENTS
        and task.accuracy_component == "all_tests_pass"
    )
    assert task.weights == CODE_WEIGHTS and set(task.weights) == set(CODE_COMPONENTS)
    for bad in (dict(source="leetcode"), dict(mbpp_variant="plus"), dict(val_split="train"), dict(timeout_s=0),
                dict(weights={"speed": 1.0}), dict(num_train=0)):  # fmt: skip
        with pytest.raises(ValueError):
            CodeTask(**bad)
    with pytest.raises(DataError, match="only a test set"):
        CodeTask(source="humaneval").examples("train")
    with pytest.raises(DataError):
        CodeTask(source="mbpp", path="/nonexistent/mbpp.jsonl").examples("train")


def test_generated_examples_are_deterministic_and_disjoint():
    a = CodeTask(seed=3, num_train=300, num_val=100)
    b = CodeTask(seed=3, num_train=300, num_val=100)
    assert a.examples("train") == b.examples("train") and a.examples("val") == b.examples("val")
    assert CodeTask(seed=4, num_train=300).examples("train") != a.examples("train")
    train = {e.messages[-1]["content"] for e in a.examples("train")}
    val = {e.messages[-1]["content"] for e in a.examples("val")}
    assert not train & val
    assert all(is_val_statement(make_problem(3, "val", i).statement) for i in range(50))
    # every template shows up in both splits, and problems carry 3-5 tests
    for split, n in (("train", 400), ("val", 400)):
        problems = [make_problem(0, split, i) for i in range(n)]
        assert {p.template for p in problems} == set(TEMPLATES)
        assert all(3 <= len(p.tests) <= 5 or p.template in ("palindrome", "repeat") for p in problems)


def test_generated_gold_solutions_pass_their_tests():
    task = CodeTask(seed=0, num_train=300, num_val=150)
    examples = list(task.examples("train")) + list(task.examples("val"))
    examples += [e for seed in (1, 2) for e in CodeTask(seed=seed, num_train=50).examples("train")]
    results = [
        j.components
        for j in task.judge_batch([e.solution for e in examples], [e.reference for e in examples])
    ]
    failing = [e.uid for e, r in zip(examples, results) if r["all_tests_pass"] != 1.0]
    assert failing == []
    assert all(strict_format(e.solution) == 1.0 for e in examples)
    assert collections.Counter(e.meta["template"] for e in examples).keys() == TEMPLATES.keys()


def test_generated_wrong_solutions_fail():
    task = CodeTask(num_val=60)
    examples = task.examples("val")
    # keep the signature, return an object equal to nothing
    wrong = [wrap(extract_code(e.solution).splitlines()[0] + "\n    return object()") for e in examples]
    results = [j.components for j in task.judge_batch(wrong, [e.reference for e in examples])]
    assert all(r["all_tests_pass"] == 0.0 and r["code_compiles"] == 1.0 for r in results)


def test_generated_vocabulary_is_small():
    words = collections.Counter()
    for i in range(500):
        p = make_problem(0, "train", i)
        words.update(w for w in (p.statement + " " + p.code + " " + p.reasoning).split() if w.isalpha())
    assert len(words) < 200, sorted(words)


# ---------------------------------------------------------------------------------------- generator levels
# sha256 over json.dumps(asdict(problem)) of problems 0-499, written down before levels existed
LEVEL_1_DIGESTS = {
    (0, "train"): "5554f8cfcd9e17d50902cae850608385e988a31f97c3832a17c84f53f28b89ee",
    (0, "val"): "475da55cd69194138c0d08c0e793ed0c506c8109b81acedbd2e709204ad1848d",
    (7, "val"): "4d106621e302e17776941a8286a8714c7d1a9f25325571b411d98c8298928ac7",
}


def run_gold(p: CodeProblem) -> None:
    """Run the gold code and its asserts in-process (our own code, not a candidate)."""
    exec(p.code + "\n" + "\n".join(p.tests), {})


def test_level_one_is_unchanged():
    assert make_problem(0, "train", 0) == make_problem(0, "train", 0, difficulty=1) == CodeProblem(
        statement="Write a function how_many(nums) that returns how many times 4 appears in the list nums.",
        name="how_many", code="def how_many(nums):\n    return nums.count(4)",
        tests=("assert how_many([3, 1, 1, 4]) == 1", "assert how_many([3, 5, 4, 3, 4, 0]) == 2",
               "assert how_many([1]) == 0", "assert how_many([5, 5, 3]) == 0", "assert how_many([4, 1, 4]) == 2"),
        reasoning="Count the items of nums equal to 4.", template="count_value",
    )  # fmt: skip
    assert make_problem(5, "train", 17).code == "def times_n(n):\n    return n * 4"
    for (seed, split), digest in LEVEL_1_DIGESTS.items():
        h = hashlib.sha256()
        for i in range(500):
            h.update(json.dumps(dataclasses.asdict(make_problem(seed, split, i))).encode())
        assert h.hexdigest() == digest, (seed, split)
    assert LEVELS[1] is TEMPLATES


@pytest.mark.parametrize("level", [2, 3])
def test_levels_are_deterministic_disjoint_and_cover_their_templates(level):
    assert [make_problem(3, "train", i, level) for i in range(30)] == [
        make_problem(3, "train", i, level) for i in range(30)
    ]
    assert make_problem(3, "train", 0, level) != make_problem(4, "train", 0, level)
    by_split = {s: [make_problem(0, s, i, level) for i in range(400)] for s in ("train", "val")}
    train, val = ({p.statement for p in ps} for ps in by_split.values())
    assert not train & val and all(is_val_statement(s) for s in val) and not any(map(is_val_statement, train))
    lower = {p.statement for s in ("train", "val") for p in (make_problem(0, s, i) for i in range(400))}
    assert not (train | val) & lower  # composed statements never repeat a level-1 one
    for problems in by_split.values():
        assert {p.template for p in problems} == set(LEVELS[level])
        assert all(3 <= len(p.tests) <= 5 for p in problems)
    with pytest.raises(ValueError, match=r"difficulty must be one of \[1, 2, 3\], got 7"):
        make_problem(0, "train", 0, 7)


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_gold_code_passes_its_own_tests_at_every_level(level):
    problems = [
        make_problem(seed, s, i, level) for seed in (0, 1) for s in ("train", "val") for i in range(300)
    ]
    for p in problems:
        run_gold(p)
    # composed tests of a value ("returns True if ...") see both answers, so a constant True or False fails
    tests = [p.tests for p in problems if p.tests[0].endswith(("True", "False"))]
    both = [t for t in tests if any(a.endswith("True") for a in t) and any(a.endswith("False") for a in t)]
    assert level == 1 or len(both) >= 0.95 * len(tests) > 0


def test_composed_levels_grade_in_the_sandbox():
    task = CodeTask(num_train=60, num_val=30, difficulty=3, train_difficulties=[2])
    examples = list(task.examples("train")) + list(task.examples("val"))
    judged = task.judge_batch([e.solution for e in examples], [e.reference for e in examples])
    assert [e.uid for e, j in zip(examples, judged) if j.components["all_tests_pass"] != 1.0] == []
    assert all(strict_format(e.solution) == 1.0 for e in examples)


def test_composition_order_matters():
    """Dropping the parentheses ("(x + 3) * 4" -> "x + 3 * 4") applies the steps in the wrong order: it fails."""
    problems = [make_problem(0, "train", i, 2) for i in range(300)]
    chained = [p for p in problems if p.template in ("add_times", "sub_times", "add_square")]
    assert len(chained) >= 20
    for p in chained:
        head, last = p.code.rsplit("\n", 1)
        with pytest.raises(AssertionError):
            run_gold(dataclasses.replace(p, code=head + "\n" + last.replace("(", "").replace(")", "")))


def test_code_task_difficulty_args():
    for bad, match in ((dict(difficulty=9), r"difficulty must be one of \[1, 2, 3\], got 9"),
                       (dict(train_difficulties=[]), "non-empty list of levels"),
                       (dict(train_difficulties=[1, 4]), "non-empty list of levels")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            CodeTask(**bad)
    with pytest.raises(DataError, match="only read by source 'generated'"):
        CodeTask(source="mbpp", train_difficulties=[1, 2])
    task = CodeTask(num_train=30, num_val=10, difficulty=2, train_difficulties=[1, 2, 3])
    train, val = task.examples("train"), task.examples("val")
    assert [e.meta["difficulty"] for e in train] == [1, 2, 3] * 10 and {
        e.meta["difficulty"] for e in val
    } == {2}
    assert all(e.meta["template"] in LEVELS[e.meta["difficulty"]] for e in [*train, *val])
    assert all(e.meta["source"] == "generated" for e in [*train, *val])
    assert [e.messages[-1]["content"] for e in val] == [
        e.messages[-1]["content"] for e in CodeTask(num_val=10, difficulty=2).examples("val")
    ]
    assert {e.meta["difficulty"] for e in CodeTask(num_train=10).examples("train")} == {1}
    assert sorted(Curriculum().pools({"code": train})) == [f"code@level={n}" for n in (1, 2, 3)]


def test_composed_vocabulary_stays_small():
    words = collections.Counter()
    for level in LEVELS:
        for i in range(500):
            p = make_problem(0, "train", i, level)
            words.update(w for w in (p.statement + " " + p.code + " " + p.reasoning).split() if w.isalpha())
    assert len(words) < 200, sorted(words)
