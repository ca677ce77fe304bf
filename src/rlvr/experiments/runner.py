"""Run an experiment: every run's ``rlvr fit`` / ``rlvr merge``, then ``rlvr evaluate``, then the results.

Runs execute in plan order (a run's ``init_from`` and ``adapters`` come before it). A run whose record
(``<out>/runs/<name>/record.json``) shows the same commands finished is reused, so an interrupted experiment
restarted with the same arguments continues where it stopped; any other run folder is replaced.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from rlvr.experiments import experiment_module
from rlvr.experiments.plan import (
    ROOT,
    Preset,
    Run,
    eval_argv,
    export_dir,
    fit_argv,
    load_preset,
    merge_argv,
    run_dir,
    write_fragments,
)

PACKAGES = ("rlvr", "torch", "lightning", "transformers", "peft", "tokenizers", "jsonargparse", "math-verify")


class ExperimentError(RuntimeError):
    """A command of a run failed; the message names the run and the command."""


def resolve(exp: str, preset: str, smoke: bool = False) -> tuple[Preset, list[Run], list[str]]:
    """The preset (options merged over the experiment's), its runs and the benchmarks, checked for order."""
    mod = experiment_module(exp)
    p = load_preset(exp, preset, smoke)
    unknown = sorted(set(p.options) - set(mod.OPTIONS) - {"smoke"})
    if unknown:
        raise ValueError(
            f"preset {p.name}: unknown options {unknown} for {exp}; it takes {sorted(mod.OPTIONS)}"
        )
    p.options = {**mod.OPTIONS, **p.options}
    runs = mod.plan(p)
    seen: set[str] = set()
    for run in runs:
        for dep in (run.init_from, *run.adapters):
            if dep is not None and dep not in seen:
                raise ValueError(f"run {run.name} needs run {dep} before it")
        if run.name in seen:
            raise ValueError(f"run name {run.name} is used twice")
        seen.add(run.name)
    return p, runs, list(p.benchmarks or mod.BENCHMARKS)


def invoke(argv: list[str], isolate: bool) -> None:
    """``rlvr <argv>`` in this process, or in a child Python process with ``isolate``; non-zero exit raises."""
    if isolate:
        code = subprocess.run([sys.executable, "-m", "rlvr", *argv], cwd=ROOT).returncode
    else:
        from rlvr.cli import main

        code = main(argv)
    if code != 0:
        raise ExperimentError(f"`rlvr {' '.join(argv)}` exited with {code}")


def is_adapter(out: Path, run: Run) -> bool:
    return (export_dir(out, run) / "adapter_config.json").is_file()


def execute(out: Path, p: Preset, run: Run, runs: dict[str, Run], benchmarks, data_root) -> dict[str, Any]:
    """Train / merge ``run`` and evaluate it; returns its record (commands, wall times, reused)."""
    d = run_dir(out, run)
    make = fit_argv(out, p, run, runs) if run.kind == "fit" else merge_argv(out, p, run, runs) if run.kind == "merge" else None  # fmt: skip
    record_file = d / "record.json"
    old = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if old and old.get("make") == make:  # trained (or merged) exactly so before: at most evaluate again
        same_eval = old.get("eval") == eval_argv(
            out, p, run, runs, benchmarks, data_root, adapter=run.kind != "model" and is_adapter(out, run)
        )
        if same_eval and (d / "eval" / "metrics.json").is_file():
            return {**old, "reused": True}
        record: dict[str, Any] = {**old, "reused": False, "reused_training": True}
    else:
        if d.exists():
            shutil.rmtree(d)
        record = {"name": run.name, "kind": run.kind, "make": make, "reused": False}
        if make is not None:
            start = time.perf_counter()
            invoke(make, p.isolate)
            record[f"{run.kind}_s"] = round(time.perf_counter() - start, 2)
    argv = eval_argv(
        out, p, run, runs, benchmarks, data_root, adapter=run.kind != "model" and is_adapter(out, run)
    )
    start = time.perf_counter()
    invoke(argv, p.isolate)
    record["eval_s"] = round(time.perf_counter() - start, 2)
    record["eval"] = argv
    d.mkdir(parents=True, exist_ok=True)
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return record


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def resolved_config(out: Path, run: Run) -> dict[str, Any] | None:
    """The fit's full configuration as LightningCLI saved it (``<run>/config.yaml``)."""
    path = run_dir(out, run) / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def run_experiment(
    exp: str,
    preset: str,
    out: str | Path,
    data_root: str | None = None,
    smoke: bool = False,
    isolate: bool | None = None,
) -> Path:
    """Every run of ``exp`` under ``preset`` into ``out``; returns ``out`` (table.md, table.csv, run.json, PNGs)."""
    from rlvr.experiments.results import write_results

    p, runs, benchmarks = resolve(exp, preset, smoke)
    if isolate is not None:
        p.isolate = isolate
    out = Path(out).resolve()
    data_root = str(Path(data_root).expanduser().resolve()) if data_root else None  # children run in ROOT
    write_fragments(out, p, runs)
    by_name = {r.name: r for r in runs}
    started, records = time.perf_counter(), {}
    for run in runs:
        t = time.perf_counter()
        print(f"experiment {exp}/{p.name}: run {run.name} ({run.kind})", flush=True)
        rec = records[run.name] = execute(out, p, run, by_name, benchmarks, data_root)
        # A reused run keeps the time it took when it ran, not the milliseconds spent finding it done.
        rec["wall_s"] = round(sum(rec.get(k, 0.0) for k in ("fit_s", "merge_s", "eval_s")) if rec["reused"]
                              else time.perf_counter() - t, 2)  # fmt: skip
    info = {
        "experiment": exp, "preset": asdict(p), "smoke": smoke, "benchmarks": benchmarks, "data_root": data_root,
        "versions": versions(), "wall_s": round(time.perf_counter() - started, 2),
        "runs_wall_s": round(sum(r["wall_s"] for r in records.values()), 2),
        "runs": [{**asdict(r), **records[r.name], "seed": _seed(out, p, r), "config": resolved_config(out, r)}
                 for r in runs],
    }  # fmt: skip
    (out / "run.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    write_results(out, exp, runs, records)
    return out


def _seed(out: Path, p: Preset, run: Run) -> dict[str, Any]:
    """The seeds of a run: the fit's ``seed_everything`` and data seed (from its saved config), the evaluation's."""
    cfg = resolved_config(out, run) or {}
    data = (cfg.get("data") or {}).get("init_args") or {}
    return {"fit": cfg.get("seed_everything"), "data": data.get("seed"), "eval": p.eval.get("seed", 0)}
