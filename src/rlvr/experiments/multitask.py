"""Transfer and interference: base vs single-task adapters vs one joint multitask adapter vs merged adapters.

Merging needs LoRA adapters of one base, so every trained run here is a LoRA adapter on the same base: the
preset's ``base_model`` (a hub model), or for the tiny model a full SFT run on all three tasks saved first
(the tiny model starts from random weights, so an adapter on it alone would learn little).
"""

from __future__ import annotations

from rlvr.eval.benchmarks import BENCHMARKS as ALL_BENCHMARKS
from rlvr.experiments.plan import SFT_ONLY, Preset, Run, run_steps

BENCHMARKS = list(ALL_BENCHMARKS)
TASKS = ("math", "sql", "code")
#: base_steps: SFT steps of the tiny base; base_overrides: its own overrides; lora: adapter shape;
#: ties_density: fraction of each task vector TIES keeps; task_overrides: {task: [...]} for that task's adapter run
#: ("multi": the joint one)
OPTIONS = {"base_steps": 100, "base_overrides": [], "lora": {"r": 8, "alpha": 16}, "ties_density": 0.5,
           "task_overrides": {}}  # fmt: skip
HEATMAP = True


def plan(p: Preset) -> list[Run]:
    o = p.options
    if p.base_model:
        base = Run("base", kind="model", model=p.base_model)
    else:
        base = Run("base", task="multi", steps=run_steps(p, o["base_steps"]),
                   overrides=(*SFT_ONLY, "--model.lora.r=0", *o["base_overrides"]))  # fmt: skip
    lora = (f"--model.lora.r={o['lora']['r']}", f"--model.lora.alpha={o['lora']['alpha']}")
    runs = [base]
    runs += [Run(t, task=t, steps=p.steps, init_from="base", overrides=(*lora, *o["task_overrides"].get(t, ())))
             for t in TASKS]  # fmt: skip
    runs.append(Run("multi", task="multi", steps=p.steps, init_from="base",
                    overrides=(*lora, *o["task_overrides"].get("multi", ()))))  # fmt: skip
    runs.append(Run("merged-linear", kind="merge", adapters=TASKS, init_from="base",
                    merge_args=("--method", "linear")))  # fmt: skip
    runs.append(Run("merged-ties", kind="merge", adapters=TASKS, init_from="base",
                    merge_args=("--method", "ties", "--density", str(o["ties_density"]))))  # fmt: skip
    return runs
