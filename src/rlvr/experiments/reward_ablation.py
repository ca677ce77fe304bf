"""Reward sets on GSM8K-style math: which reward components make a policy right, well-formatted and brief.

Each run trains the math task config (SFT warm-up, then GRPO) with its own ``weights`` (merged over
:data:`rlvr.domains.math.task.DEFAULT_WEIGHTS`); the SFT part is identical, so the runs differ from the
switch on. Reported: accuracy, strict-format rate and completion length.
"""

from __future__ import annotations

from rlvr.experiments.plan import SFT_ONLY, Preset, Run, run_steps, task_list

BENCHMARKS = ["gsm8k", "gen_math"]  # gen_math: where the tiny model scores
OPTIONS = {"task": "math"}
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
    task = p.options["task"]
    if p.base_model:
        runs = [Run("base", kind="model", model=p.base_model)]
    else:
        runs = [Run("base", task=task, steps=run_steps(p, 1), overrides=(*SFT_ONLY, "--model.lr=0.0"))]
    for name, weights in REWARD_SETS.items():
        runs.append(Run(name, task=task, steps=p.steps, fragment=with_weights(p, task, weights)))
    return runs
