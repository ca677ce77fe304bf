"""``rlvr experiment``: train, evaluate and report every run of an experiment in one command.

rlvr experiment --exp multitask --preset tiny --data-root ../shared/data --out runs/experiments/multitask-tiny
rlvr experiment --exp reward_ablation --preset tiny --smoke     # every run cut to a few steps
rlvr experiment --exp sft_rl --preset qwen0.5b --list           # the runs and their commands, no training
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rlvr.experiments import EXPERIMENTS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlvr experiment", description="Run an experiment end to end.")
    p.add_argument("--exp", required=True, choices=EXPERIMENTS)
    p.add_argument("--preset", default="tiny", help="configs/experiment/<exp>/<preset>.yaml, or a YAML file")
    p.add_argument("--out", help="results directory (default: runs/experiments/<exp>-<preset>[-smoke])")
    p.add_argument("--data-root", help="benchmark data laid out like shared/data (default: hub datasets)")
    p.add_argument("--smoke", action="store_true", help="every run a few steps, 2 items per benchmark")
    isolate = p.add_mutually_exclusive_group()
    isolate.add_argument(
        "--isolate", action="store_true", default=None, help="each command in its own process"
    )
    isolate.add_argument(
        "--in-process", dest="isolate", action="store_false", help="every command in this one"
    )
    p.add_argument("--list", action="store_true", help="print the runs and their commands; run nothing")
    return p


def main(argv: Sequence[str]) -> int:
    from rlvr.experiments.plan import eval_argv, fit_argv, merge_argv
    from rlvr.experiments.runner import resolve, run_experiment

    args = _parser().parse_args(list(argv))
    preset = Path(args.preset).stem
    out = Path(args.out or f"runs/experiments/{args.exp}-{preset}" + ("-smoke" if args.smoke else ""))
    if args.list:
        p, runs, benchmarks = resolve(args.exp, args.preset, args.smoke)
        by_name = {r.name: r for r in runs}
        for run in runs:
            make = {"fit": fit_argv, "merge": merge_argv}.get(run.kind)
            print(f"# {run.name} ({run.kind})")
            if make is not None:
                print("rlvr " + " ".join(make(out.resolve(), p, run, by_name)))
            adapter = run.kind == "merge" or any(
                "lora.r=" in o and not o.endswith("=0") for o in run.overrides
            )
            print(
                "rlvr "
                + " ".join(eval_argv(out.resolve(), p, run, by_name, benchmarks, args.data_root, adapter))
            )
        return 0
    done = run_experiment(args.exp, args.preset, out, args.data_root, args.smoke, args.isolate)
    print(f"wrote {done / 'table.md'}, {done / 'table.csv'} and {done / 'run.json'}")
    return 0
