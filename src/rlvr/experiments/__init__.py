"""Experiment runners: one command trains every run of an experiment, evaluates each with the evaluation
harness and writes a results directory (``rlvr experiment --exp multitask --preset tiny --out DIR``).

An experiment is a module with ``BENCHMARKS``, ``OPTIONS`` (defaults a preset's ``options`` override),
``HEATMAP`` and ``plan(preset) -> list[Run]``; presets live in ``configs/experiment/<exp>/<preset>.yaml``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXPERIMENTS: tuple[str, ...] = ("multitask", "sft_rl", "reward_ablation")


def experiment_module(name: str) -> ModuleType:
    """The module of experiment ``name``; an unknown name is a one-line ``ValueError``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}: choose from {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"rlvr.experiments.{name}")
