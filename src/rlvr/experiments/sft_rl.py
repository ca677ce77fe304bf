"""SFT vs RL vs SFT->RL vs hybrid lambda (constant and scheduled), each with and without an entropy bonus.

Every run trains the same task config from the same start: the preset's ``base_model``, or the tiny model
(built from the same corpus and seed in every run, so the untrained ``base`` row is exported by a one-step fit
at lr 0). ``sft-rl`` is the task config's own schedule (SFT, then GRPO from ``switch_fraction``, which a preset's
``options`` may move).
"""

from __future__ import annotations

from rlvr.experiments.plan import SFT_ONLY, Preset, Run, run_steps

BENCHMARKS = ["gsm8k", "math500", "gen_math"]  # gen_math: where the tiny model scores
#: task: the trained task config; lambda: the constant hybrid weight; schedule: the scheduled hybrid's
#: shape (λ from 1 to 0 over the run); entropy_coef: the entropy bonus γ of the "+ent" runs; switch_fraction:
#: where sft-rl turns from SFT to GRPO (None: the task config's own, 0.9 for math)
OPTIONS = {"task": "math", "lambda": 0.5, "schedule": "linear", "entropy_coef": 0.01, "switch_fraction": None}
HEATMAP = False


def _constant(lam: float) -> tuple[str, ...]:
    return ("--model.hybrid.schedule=constant", f"--model.hybrid.start={lam}", f"--model.hybrid.end={lam}",
            "--model.hybrid.switch_fraction=null")  # fmt: skip


def methods(o: dict) -> dict[str, tuple[str, ...]]:
    """Training method name -> its overrides."""
    return {
        "sft": SFT_ONLY,
        "rl": _constant(0.0),
        "sft-rl": () if o["switch_fraction"] is None else (f"--model.hybrid.switch_fraction={o['switch_fraction']}",),
        "hybrid-const": _constant(float(o["lambda"])),
        "hybrid-sched": (f"--model.hybrid.schedule={o['schedule']}", "--model.hybrid.start=1.0",
                         "--model.hybrid.end=0.0", "--model.hybrid.switch_fraction=null"),
    }  # fmt: skip


def plan(p: Preset) -> list[Run]:
    o, task = p.options, p.options["task"]
    if p.base_model:
        runs = [Run("base", kind="model", model=p.base_model)]
    else:
        runs = [Run("base", task=task, steps=run_steps(p, 1), overrides=(*SFT_ONLY, "--model.lr=0.0"))]
    ent = (f"--model.loss.entropy_coef={o['entropy_coef']}",)
    for name, overrides in methods(o).items():
        runs.append(Run(name, task=task, steps=p.steps, overrides=overrides))
        if name != "sft":  # pure SFT has no policy term for the entropy bonus to act on
            runs.append(Run(f"{name}+ent", task=task, steps=p.steps, overrides=overrides + ent))
    return runs
