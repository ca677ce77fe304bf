"""Reward sets on GSM8K-style math: which reward components make a policy right, well-formatted and brief.

Each run trains the math task config with its own ``weights`` (merged over
:data:`rlvr.domains.math.task.DEFAULT_WEIGHTS`) from the same start (:func:`rlvr.experiments.plan.base_run`):
the task config's schedule (SFT warm-up, then GRPO: the SFT part is identical, so the runs differ from the switch
on), or, with ``overrides`` such as pure GRPO, the given schedule from a saved SFT base. Reported: accuracy,
strict-format rate and completion length.
"""

from __future__ import annotations

from rlvr.experiments.plan import Preset, Run, base_run, task_list

BENCHMARKS = ["gsm8k", "gen_math"]  # gen_math: where the tiny model scores
#: task: the trained task config; base_steps / base_overrides: the tiny base's SFT steps (0 = untrained) and its
#: own overrides; overrides: extra overrides of every reward set's run (not of the base)
OPTIONS = {"task": "math", "base_steps": 0, "base_overrides": [], "overrides": []}
HEATMAP = False
#: run name -> reward weights. LCPO (L1, Aggarwal & Welleck 2025) replaces exact match by LCPO-Max: the
#: correctness reward scaled by how close the reasoning is to the target length, at the same weight.
REWARD_SETS: dict[str, dict[str, float]] = {
    "format-exact": {"correctness": 2.0, "strict_format": 0.5, "soft_format": 0.0, "is_number": 0.0},
    "number-soft": {"correctness": 2.0, "strict_format": 0.5, "soft_format": 0.5, "is_number": 0.5},
    "length": {"correctness": 2.0, "strict_format": 0.5, "soft_format": 0.5, "is_number": 0.5, "length": 0.5},
    "lcpo": {"correctness": 0.0, "strict_format": 0.5, "soft_format": 0.5, "is_number": 0.5, "lcpo_max": 2.0},
}
#: table columns: (benchmark, metric); completion_words is computed from the evaluated samples
COLUMNS = [
    (b, m) for b in BENCHMARKS for m in ("accuracy", "strict_accuracy", "format_rate", "completion_words")
]


def with_weights(p: Preset, task: str, weights: dict[str, float]) -> dict:
    """A config fragment: the fit's task list with ``weights`` set on its math task(s)."""
    tasks = task_list(p, task)
    math = [t for t in tasks if str(t.get("class_path", "")).endswith("MathTask")]
    if not math:
        raise ValueError(f"reward_ablation: the {task} task config has no MathTask")
    for t in math:
        t.setdefault("init_args", {})["weights"] = dict(weights)
    return {"data": {"tasks": tasks}}


def plan(p: Preset) -> list[Run]:
    o, task = p.options, p.options["task"]
    base, init_from = base_run(p, task)
    runs = [base]
    for name, weights in REWARD_SETS.items():
        runs.append(Run(name, task=task, steps=p.steps, overrides=tuple(o["overrides"]),
                        fragment=with_weights(p, task, weights), init_from=init_from))  # fmt: skip
    return runs
