"""SFT vs RL vs SFT->RL vs hybrid lambda (constant and scheduled), each with and without an entropy bonus.

Every method trains the same task config for the same number of steps from the same start: the preset's
``base_model``, or for the tiny model a short SFT run saved first (``base_steps``; the tiny model starts from random
weights, where GRPO alone has no reward to follow, as a pretrained model would not). ``base_steps: 0`` starts every
method from the untrained tiny model instead, with a one-step fit at lr 0 as the ``base`` row. ``sft-rl`` is the task
config's own schedule (SFT, then GRPO from ``switch_fraction``, which a preset's ``options`` may move). Each stage runs
at the task config's learning rates: ``lr`` while SFT, ``hybrid.rl_lr`` once GRPO is in the loss (from step 0 for
``rl`` and ``hybrid-const``); ``method_overrides`` gives a method its own.
"""

from __future__ import annotations

from rlvr.experiments.plan import SFT_ONLY, Preset, Run, base_run

BENCHMARKS = ["gsm8k", "math500", "gen_math"]  # gen_math: where the tiny model scores
#: task: the trained task config; lambda: the constant hybrid weight; schedule: the scheduled hybrid's
#: shape (λ from 1 to 0 over the run); entropy_coef: the entropy bonus γ of the "+ent" runs; switch_fraction:
#: where sft-rl turns from SFT to GRPO (None: the task config's own); base_steps / base_overrides: the tiny base's
#: SFT steps (0 = untrained) and its own overrides; method_overrides: method name -> extra overrides of its runs
OPTIONS = {"task": "math", "lambda": 0.5, "schedule": "linear", "entropy_coef": 0.01, "switch_fraction": None,
           "base_steps": 0, "base_overrides": [], "method_overrides": {}}  # fmt: skip
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
    table = methods(o)
    unknown = sorted(set(o["method_overrides"]) - set(table))
    if unknown:
        raise ValueError(f"preset {p.name}: method_overrides names {unknown}; the methods are {list(table)}")
    base, init_from = base_run(p, task)
    runs = [base]
    ent = (f"--model.loss.entropy_coef={o['entropy_coef']}",)
    for name, overrides in table.items():
        overrides = overrides + tuple(o["method_overrides"].get(name, ()))
        runs.append(Run(name, task=task, steps=p.steps, overrides=overrides, init_from=init_from))
        if name != "sft":  # pure SFT has no policy term for the entropy bonus to act on
            runs.append(Run(f"{name}+ent", task=task, steps=p.steps, overrides=overrides + ent, init_from=init_from))  # fmt: skip
    return runs
