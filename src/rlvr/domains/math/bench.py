"""GSM8K and MATH-500 as benchmarks, scored by the math verifier (:mod:`rlvr.domains.math.verify`).

Prompts are the math task's (system prompt asking for ``<reasoning>``/``<answer>``, then the question).
The verifier finds the final answer in the last ``<answer>`` block, else the last ``\\boxed{}``, else the
last number, and compares it exactly (plain numbers) or through math-verify. Metrics:

* ``accuracy``: correct by any of those paths (what training rewards);
* ``strict_accuracy``: correct *and* found in an ``<answer>`` block or ``\\boxed{}`` (no fallback);
* ``format_rate``: share of completions whose answer sits in an ``<answer>`` block or ``\\boxed{}``;
* ``fallback_accuracy``: the last number of the completion alone, whatever the tags say (lm-evaluation-
  harness's "flexible extract" reading of GSM8K).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlvr.domains.format import DEFAULT_SYSTEM_PROMPT
from rlvr.domains.math.task import DEFAULT_PATHS, gsm8k_examples, math500_examples
from rlvr.domains.math.verify import answers_match, judge_math
from rlvr.domains.sources import load_records
from rlvr.eval.spec import Benchmark, GenItem, Loaded, Verdict, local_file, mean
from rlvr.eval.store import SampleResult


def load_gsm8k(data_root: Path | None) -> Loaded:
    """GSM8K test problems; ``uid`` is the 0-based index in the test split."""
    if data_root is not None:
        records = load_records(str(local_file(data_root, "gsm8k/test.jsonl.gz")), "test")
    else:
        records = load_records(DEFAULT_PATHS["gsm8k"], "test", "main")
    examples = gsm8k_examples(records, "test", DEFAULT_SYSTEM_PROMPT)
    return Loaded([GenItem(str(i), ex) for i, ex in enumerate(examples)])


def load_math500(data_root: Path | None) -> Loaded:
    """MATH-500 problems in file order; ``uid`` is the record's ``unique_id``."""
    if data_root is not None:
        records = load_records(str(local_file(data_root, "math500/test.jsonl.gz")), "test")
    else:
        records = load_records(DEFAULT_PATHS["math500"], "test")
    examples = math500_examples(records, DEFAULT_SYSTEM_PROMPT)
    return Loaded(
        [GenItem(str(r.get("unique_id", i)), ex) for i, (r, ex) in enumerate(zip(records, examples))]
    )


def judge(completions: Sequence[str], items: Sequence[GenItem]) -> list[Verdict]:
    """Verify each completion's final answer against the gold one (verdicts of the math domain)."""
    out = []
    for text, item in zip(completions, items):
        j = judge_math(text, item.example.reference)
        out.append(Verdict(j.components["correctness"], j.verdict, j.detail))
    return out


def normalize(completion: str, item: GenItem) -> str:
    """A one-line given answer with no tags (``"6 - 5i"``, ``"\\frac{1}{2}"``) is read as the bare final answer
    when that reading matches the gold answer (the verifier alone would take its last number)."""
    line = completion.strip()
    if "\n" in line or "<answer>" in line or "\\boxed" in line:
        return completion
    return f"\\boxed{{{line}}}" if answers_match(line, str(item.example.reference["answer"])) else completion


def metrics(samples: Sequence[SampleResult]) -> dict[str, float]:
    return {
        "accuracy": mean([s.correct for s in samples]),
        "strict_accuracy": mean([s.correct * float(s.detail.get("formatted", False)) for s in samples]),
        "format_rate": mean([float(s.detail.get("formatted", False)) for s in samples]),
        "fallback_accuracy": mean([float(s.detail.get("fallback_correct", False)) for s in samples]),
    }


GSM8K = Benchmark(
    name="gsm8k", kind="generate", primary="accuracy", load=load_gsm8k, judge=judge, metrics=metrics,
    max_new_tokens=512, normalize=normalize,
)  # fmt: skip
MATH500 = Benchmark(
    name="math500", kind="generate", primary="accuracy", load=load_math500, judge=judge, metrics=metrics,
    max_new_tokens=1024, normalize=normalize,
)  # fmt: skip
