"""Math task: GSM8K, MATH-500 or a seeded word-problem generator, scored by :mod:`rlvr.domains.math.verify`.

Prompts are ``[system, user(question)]``; the gold completion is the reference solution in the strict
``<reasoning>/<answer>`` format. The built-in generator (:mod:`rlvr.domains.math.generator`) is the offline
default.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr.domains.base import DataError, Example, Judgement, check_levels, merge_weights
from rlvr.domains.format import DEFAULT_SYSTEM_PROMPT, format_answer
from rlvr.domains.math.generator import LEVELS, Problem, generate_problem
from rlvr.domains.math.verify import LCPO_ALPHA, LCPO_BETA, MATH_COMPONENTS, judge_math, score_math
from rlvr.domains.sources import load_records, looks_local, require_fields

SOURCES: tuple[str, ...] = ("generated", "gsm8k", "math500")
#: where gsm8k / math500 are read from when ``path`` is not given (hub ids)
DEFAULT_PATHS: dict[str, str] = {"gsm8k": "openai/gsm8k", "math500": "HuggingFaceH4/MATH-500"}
#: reward weights; the length-shaping components are opt-in
DEFAULT_WEIGHTS: dict[str, float] = {
    "correctness": 2.0,
    "strict_format": 0.5,
    "soft_format": 0.5,
    "is_number": 0.5,
    "length": 0.0,
    "lcpo_exact": 0.0,
    "lcpo_max": 0.0,
}
GENERATED_NUM_TRAIN = 2000
GENERATED_NUM_VAL = 200
MATH500_NUM_VAL = 100

_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's "<<48/2=24>>" calculator annotations


def _words(text: str) -> int:
    return len(text.split())


def _make_example(
    source: str, uid: str, system_prompt: str, question: str, reasoning: str, answer: str, meta: dict
) -> Example:
    return Example(
        task="math",
        messages=[{"role": "system", "content": system_prompt}, {"role": "user", "content": question}],
        reference={"answer": answer, "ref_len": _words(reasoning)},
        solution=format_answer(reasoning, answer),
        uid=f"{source}/{uid}",
        meta=meta,
    )


# ------------------------------------------------------------------------------------------------ loaders


def gsm8k_examples(records: list[dict[str, Any]], split: str, system_prompt: str) -> list[Example]:
    """GSM8K records -> examples; the gold answer is the text after ``####`` with thousands commas removed."""
    out = []
    for i, rec in enumerate(records):
        where = f"gsm8k {split} record {i}"
        require_fields(rec, ("question", "answer"), where)
        if not isinstance(rec["answer"], str) or "####" not in rec["answer"]:
            raise DataError(f"{where}: malformed record, 'answer' has no '#### <number>' line")
        reasoning, gold = rec["answer"].rsplit("####", 1)
        gold = gold.strip().replace(",", "")
        if not gold:
            raise DataError(f"{where}: malformed record, empty final answer after '####'")
        reasoning = _CALCULATOR.sub("", reasoning).strip()
        out.append(
            _make_example("gsm8k", f"{split}/{i}", system_prompt, str(rec["question"]), reasoning, gold, {})
        )
    return out


def math500_examples(records: list[dict[str, Any]], system_prompt: str) -> list[Example]:
    """MATH-500 records -> examples; ``uid`` follows the record's ``unique_id`` when it has one."""
    out = []
    for i, rec in enumerate(records):
        require_fields(rec, ("problem", "solution", "answer"), f"math500 record {i}")
        uid = str(rec.get("unique_id", i)).removesuffix(".json")
        meta = {k: rec[k] for k in ("subject", "level") if k in rec}
        answer = str(rec["answer"]).strip()
        if not answer:
            raise DataError(f"math500 record {i}: malformed record, empty 'answer'")
        out.append(
            _make_example(
                "math500", uid, system_prompt, str(rec["problem"]), str(rec["solution"]), answer, meta
            )
        )
    return out


# --------------------------------------------------------------------------------------------------- task


class MathTask:
    """Math word problems with a verifiable final answer.

    Args:
        source: ``"generated"`` (seeded arithmetic word problems, offline), ``"gsm8k"`` or ``"math500"``.
        path: hub id or local file / directory for gsm8k and math500 (default ``openai/gsm8k`` and
            ``HuggingFaceH4/MATH-500``); a gsm8k directory must hold ``train`` and ``test`` files. Not used
            by ``"generated"``.
        hub_config: hub dataset configuration; ``None`` means ``"main"`` for gsm8k and none for math500.
        system_prompt: system message of every prompt.
        weights: reward weight per component, merged over :data:`DEFAULT_WEIGHTS` (so ``{lcpo_max: 1.0}``
            adds LCPO and keeps the rest).
        num_train: train prompts; ``None`` = all records (gsm8k, math500) or 2000 (generated).
        num_val: val prompts; ``None`` = all of GSM8K test, 100 of MATH-500, 200 generated.
        seed: generator seed; also fixes which MATH-500 problems are val.
        difficulty: generator level 1-5 (1: one or two +/- steps on numbers up to 20; 5: four to six steps
            with *, exact / and numbers up to 1000). Val problems are always of this level.
        train_difficulties: generated train problems of several levels (problem i has level
            ``train_difficulties[i % len]``, recorded in ``meta["difficulty"]``), the ladder a
            :class:`data_modules.curriculum.Curriculum` climbs; ``None`` = all of ``difficulty``.
        lcpo_alpha: LCPO slope per word of reasoning.
        lcpo_beta: LCPO-Max offset.

    Splits: gsm8k train = GSM8K train, val = GSM8K test (the first ``num_*`` records). MATH-500 has only a
    test split: a seeded permutation puts ``num_val`` problems in val and the rest in train. The generator
    draws train and val from disjoint seeds and disjoint partitions of problem space.
    """

    name = "math"
    components: tuple[str, ...] = MATH_COMPONENTS
    accuracy_component = "correctness"

    def __init__(
        self,
        source: str = "generated",
        path: str | None = None,
        hub_config: str | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        weights: dict[str, float] | None = None,
        num_train: int | None = None,
        num_val: int | None = None,
        seed: int = 0,
        difficulty: int = 1,
        train_difficulties: list[int] | None = None,
        lcpo_alpha: float = LCPO_ALPHA,
        lcpo_beta: float = LCPO_BETA,
    ) -> None:
        if source not in SOURCES:
            raise DataError(f"unknown math source {source!r}; choose one of {list(SOURCES)}")
        if source == "generated" and path is not None:
            raise DataError("path is only read by source 'gsm8k' or 'math500'; drop it for 'generated'")
        train_ladder = check_levels(difficulty, train_difficulties, LEVELS, source)
        if any(n is not None and n < 0 for n in (num_train, num_val)):
            raise ValueError(f"num_train / num_val must be >= 0 or None, got {num_train} / {num_val}")
        self.source, self.system_prompt, self.seed, self.difficulty = source, system_prompt, seed, difficulty
        self.path = path if path is not None else DEFAULT_PATHS.get(source)
        self.hub_config = hub_config if hub_config is not None or source != "gsm8k" else "main"
        self.weights = merge_weights("math", DEFAULT_WEIGHTS, weights, MATH_COMPONENTS)
        self.num_train, self.num_val = num_train, num_val
        self.lcpo_alpha, self.lcpo_beta = lcpo_alpha, lcpo_beta
        self.train_difficulties = train_ladder
        self._cache: dict[str, list[Example]] = {}

    def examples(self, split: str) -> Sequence[Example]:
        """Prompts of ``split`` ("train" or "val"), built once and cached."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if split not in self._cache:
            self._cache[split] = self._build(split)
        return self._cache[split]

    def score(self, completion: str, reference: Mapping[str, Any]) -> dict[str, float]:
        """All :data:`MATH_COMPONENTS` of a completion (see :func:`rlvr.domains.math.verify.score_math`)."""
        return score_math(completion, reference, lcpo_alpha=self.lcpo_alpha, lcpo_beta=self.lcpo_beta)

    def judge(self, completion: str, reference: Mapping[str, Any]) -> Judgement:
        """Components, verdict and extracted answer (see :func:`rlvr.domains.math.verify.judge_math`)."""
        return judge_math(completion, reference, lcpo_alpha=self.lcpo_alpha, lcpo_beta=self.lcpo_beta)

    def check_reference(self, reference: Mapping[str, Any]) -> str | None:
        """Why ``reference`` cannot be scored (one line), or ``None``."""
        return None if isinstance(reference.get("answer"), str) else "math needs a string field 'answer'"

    def _limit(self, split: str, default: int | None) -> int | None:
        n = self.num_train if split == "train" else self.num_val
        return default if n is None else n

    def _build(self, split: str) -> list[Example]:
        if self.source == "generated":
            count = self._limit(split, GENERATED_NUM_TRAIN if split == "train" else GENERATED_NUM_VAL)
            if split == "train":
                return [self._generated(split, i) for i in range(count or 0)]
            return self._distinct_val(count or 0)
        assert self.path is not None  # set from DEFAULT_PATHS for every non-generated source
        config = None if looks_local(self.path) else self.hub_config
        if self.source == "gsm8k":
            gsm_split = "train" if split == "train" else "test"
            records = load_records(self.path, gsm_split, config)[: self._limit(split, None)]
            return gsm8k_examples(records, gsm_split, self.system_prompt)
        examples = math500_examples(load_records(self.path, "test", config), self.system_prompt)
        order = list(range(len(examples)))
        random.Random(f"rlvr-math500/{self.seed}").shuffle(order)
        n_val = min(len(order), self._limit("val", MATH500_NUM_VAL) or 0)
        chosen = order[:n_val] if split == "val" else order[n_val:][: self._limit("train", None)]
        return [examples[i] for i in chosen]

    def _distinct_val(self, count: int) -> list[Example]:
        """``count`` val problems, no two with the same numbers and operations while the level has that many
        (level 1 has ~250 in its val partition); past ``20 * count`` draws the rest may repeat one."""
        out, seen, index = [], set(), 0
        while len(out) < count:
            level, problem = self._problem("val", index)
            if problem.key not in seen or index >= 20 * count:
                seen.add(problem.key)
                out.append(self._example("val", index, level, problem))
            index += 1
        return out

    def _problem(self, split: str, index: int) -> tuple[int, Problem]:
        ladder = (
            self.train_difficulties if split == "train" and self.train_difficulties else [self.difficulty]
        )
        level = ladder[index % len(ladder)]
        return level, generate_problem(self.seed, split, index, level)

    def _example(self, split: str, index: int, level: int, p: Problem) -> Example:
        meta = {"difficulty": level, "steps": len(p.key.split()) - 1}
        return _make_example(
            "generated", f"{split}/{index}", self.system_prompt, p.question, p.reasoning, str(p.answer), meta
        )

    def _generated(self, split: str, index: int) -> Example:
        return self._example(split, index, *self._problem(split, index))
