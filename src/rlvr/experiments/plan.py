"""What an experiment is before it runs: a preset (configs/experiment/<exp>/<preset>.yaml) and a list of runs.

Each run becomes one to three ``rlvr`` commands (``fit`` or ``merge``, then ``evaluate``); :func:`fit_argv` and
:func:`eval_argv` build them, so a test can parse every run of every preset without training anything.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: the project root: configs/ sits next to src/
ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"
#: smoke runs: steps per training run, items per benchmark, tokens per completion
SMOKE_STEPS, SMOKE_LIMIT, SMOKE_TOKENS = 4, 2, 16
SMOKE_OVERRIDES = (
    "--data.prompts_per_step=3", "--data.val_prompts_per_task=2", "--model.completions_per_prompt=2",
    f"--model.max_new_tokens={SMOKE_TOKENS}", "--checkpoint.every_n_steps=0",
)  # fmt: skip
#: a fit that never generates: pure SFT (lambda = 1 at every step)
SFT_ONLY = (
    "--model.hybrid.schedule=constant", "--model.hybrid.start=1.0", "--model.hybrid.end=1.0",
    "--model.hybrid.switch_fraction=null",
)  # fmt: skip
#: ``rlvr evaluate`` flags a preset may set under ``eval:``
EVAL_KEYS = ("limit", "max_new_tokens", "batch_size", "choice_batch_size", "n_samples", "temperature", "seed")


@dataclass
class Preset:
    """One preset of an experiment; the YAML holds only what differs from these defaults.

    Attributes:
        name: the preset's name (its file stem).
        steps: ``trainer.max_steps`` of each training run (an experiment may give some runs their own budget
            through ``options``).
        configs: extra ``--config`` files of every fit, after base.yaml and the run's task config (e.g. a
            model config), relative to the project root.
        fit: a LightningCLI config fragment applied to every fit after ``configs``.
        overrides: ``--key=value`` overrides of every fit.
        base_model: the model every run starts from (hub id or directory); None = the built tiny model.
        benchmarks: evaluated benchmarks (None = the experiment's own list).
        eval: ``rlvr evaluate`` flags (:data:`EVAL_KEYS`).
        isolate: run each command in its own Python process (frees GPU memory between runs) instead of
            in-process (saves ~4 s of start-up per command on a CPU).
        options: experiment-specific settings, merged over the experiment's ``OPTIONS``.
    """

    name: str
    steps: int
    configs: list[str] = field(default_factory=list)
    fit: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    base_model: str | None = None
    benchmarks: list[str] | None = None
    eval: dict[str, Any] = field(default_factory=dict)
    isolate: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"preset {self.name}: steps must be >= 1, got {self.steps}")
        bad = sorted(set(self.eval) - set(EVAL_KEYS))
        if bad:
            raise ValueError(f"preset {self.name}: unknown eval keys {bad}; choose from {list(EVAL_KEYS)}")
        for c in self.configs:
            if not (ROOT / c).is_file():
                raise ValueError(f"preset {self.name}: config {c} not found under {ROOT}")


@dataclass
class Run:
    """One trained, merged or given model of an experiment, evaluated on the experiment's benchmarks.

    Attributes:
        name: the run's folder under ``<out>/runs`` and its row in the table.
        kind: ``fit`` (train with ``rlvr fit``), ``merge`` (``rlvr merge`` of other runs' adapters) or
            ``model`` (evaluate ``model`` as it is).
        task: the task config of a fit (``configs/task/<task>.yaml``).
        steps: ``trainer.max_steps`` of a fit.
        overrides: ``--key=value`` overrides of a fit, after the preset's.
        fragment: a config fragment of this fit only (written next to the results, passed as ``--config``).
        init_from: the run whose model this fit starts from, or whose model the merged adapters sit on
            (None: the preset's base model, else the tiny model).
        model: the evaluated model of a ``model`` run.
        adapters: the runs whose adapters a ``merge`` combines.
        merge_args: ``rlvr merge`` options (``--method ties --density 0.5``).
    """

    name: str
    kind: str = "fit"
    task: str | None = None
    steps: int = 0
    overrides: tuple[str, ...] = ()
    fragment: dict[str, Any] | None = None
    init_from: str | None = None
    model: str | None = None
    adapters: tuple[str, ...] = ()
    merge_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("fit", "merge", "model"):
            raise ValueError(f"run {self.name}: kind must be fit | merge | model, got {self.kind!r}")
        if self.kind == "fit" and (self.task is None or self.steps < 1):
            raise ValueError(f"run {self.name}: a fit needs a task and steps >= 1")
        if self.kind == "merge" and (len(self.adapters) < 2 or self.init_from is None):
            raise ValueError(f"run {self.name}: a merge needs >= 2 adapters and init_from (their base)")
        if self.kind == "model" and not self.model:
            raise ValueError(f"run {self.name}: a model run needs model")


def preset_path(exp: str, preset: str) -> Path:
    """``configs/experiment/<exp>/<preset>.yaml``, or ``preset`` itself when it is a YAML file."""
    given = Path(preset)
    if given.suffix in (".yaml", ".yml") and given.is_file():
        return given
    path = CONFIGS / "experiment" / exp / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS / "experiment" / exp).glob("*.yaml"))
        raise ValueError(f"unknown preset {preset!r} of experiment {exp}: choose from {known} or a YAML file")
    return path


def load_preset(exp: str, preset: str, smoke: bool = False) -> Preset:
    """The preset as a :class:`Preset` (unknown keys are a one-line error); ``smoke`` cuts it to a few steps."""
    path = preset_path(exp, preset)
    data = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in dataclasses.fields(Preset)} - {"name"}
    bad = sorted(set(data) - known)
    if bad:
        raise ValueError(f"{path}: unknown keys {bad}; a preset sets {sorted(known)}")
    p = Preset(name=path.stem, **data)
    return smoked(p) if smoke else p


def smoked(p: Preset) -> Preset:
    """``p`` cut for a smoke run: every fit at most :data:`SMOKE_STEPS` steps, small batches and budgets,
    :data:`SMOKE_LIMIT` items per benchmark."""
    q = copy.deepcopy(p)
    q.steps = min(q.steps, SMOKE_STEPS)
    q.overrides = [*q.overrides, *SMOKE_OVERRIDES]
    q.eval = {**q.eval, "limit": SMOKE_LIMIT, "max_new_tokens": SMOKE_TOKENS, "n_samples": 1}
    q.options = {**q.options, "smoke": True}
    return q


def run_steps(p: Preset, steps: int) -> int:
    """A run's own step budget, cut to the smoke budget in a smoke run."""
    return min(steps, SMOKE_STEPS) if p.options.get("smoke") else steps


def base_run(p: Preset, task: str) -> tuple[Run, str | None]:
    """The ``base`` row every method or reward set starts from, and the ``init_from`` of their fits.

    The preset's ``base_model`` when it names one; else, with ``options.base_steps`` > 0, a short SFT run of
    ``task`` (with ``options.base_overrides``) whose model the fits start from (the tiny model starts from
    random weights, where GRPO has no reward to follow); else a one-step fit at lr 0: the untrained tiny model,
    which the fits start from on their own.
    """
    o = p.options
    if p.base_model:
        return Run("base", kind="model", model=p.base_model), None
    if o.get("base_steps", 0) > 0:
        overrides = (*SFT_ONLY, *o.get("base_overrides", ()))
        return Run("base", task=task, steps=run_steps(p, o["base_steps"]), overrides=overrides), "base"
    return Run("base", task=task, steps=run_steps(p, 1), overrides=(*SFT_ONLY, "--model.lr=0.0")), None


def task_list(p: Preset, task: str) -> list[dict[str, Any]]:
    """The ``data.tasks`` list a fit of ``task`` ends up with (task config, then the preset's configs and
    fragment; a later list replaces an earlier one), as plain dicts to edit into a run's fragment."""
    tasks: list[dict[str, Any]] = []
    layers = [yaml.safe_load((ROOT / c).read_text()) or {} for c in [f"configs/task/{task}.yaml", *p.configs]]
    for layer in [*layers, p.fit]:
        data = layer.get("data") or {}
        found = data.get("tasks", (data.get("init_args") or {}).get("tasks"))
        if found is not None:
            tasks = copy.deepcopy(found)
    if not tasks:
        raise ValueError(f"configs/task/{task}.yaml and preset {p.name} name no data.tasks")
    return tasks


def run_dir(out: Path, run: Run) -> Path:
    return out / "runs" / run.name


def export_dir(out: Path, run: Run) -> Path:
    return run_dir(out, run) / "export"


def fit_argv(out: Path, p: Preset, run: Run, runs: dict[str, Run]) -> list[str]:
    """``rlvr fit`` arguments of ``run``: configs, the fragments written by :func:`write_fragments`, the run
    folder ``<out>/runs/<name>`` (TensorBoard events, config.yaml, export/) and the overrides."""
    configs = ["configs/base.yaml", f"configs/task/{run.task}.yaml", *p.configs]
    argv = ["fit", *[a for c in configs for a in ("--config", str(ROOT / c))]]
    if p.fit:
        argv += ["--config", str(out / "configs" / "preset.yaml")]
    if run.fragment:
        argv += ["--config", str(out / "configs" / f"{run.name}.yaml")]
    argv += [
        f"--trainer.max_steps={run.steps}",
        f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.logger.init_args.name=runs",
        f"--trainer.logger.init_args.version={run.name}",
    ]
    start = start_model(out, p, run, runs)
    if start is not None:
        argv.append(f"--model.name_or_path={start}")
    return argv + list(p.overrides) + list(run.overrides)


def start_model(out: Path, p: Preset, run: Run, runs: dict[str, Run]) -> str | None:
    """The model ``run`` starts from (fit) or its adapters sit on (merge): ``init_from``'s model, else the
    preset's base model, else None (the tiny model, built by the fit)."""
    if run.init_from is None:
        return p.base_model
    src = runs[run.init_from]
    if src.kind == "model":
        return src.model
    if src.kind == "merge":
        raise ValueError(f"run {run.name}: init_from {src.name} is a merged adapter, not a model")
    return str(export_dir(out, src))


def merge_argv(out: Path, p: Preset, run: Run, runs: dict[str, Run]) -> list[str]:
    adapters = [str(export_dir(out, runs[a])) for a in run.adapters]
    base = start_model(out, p, run, runs)
    return ["merge", "--base", str(base), "--adapters", *adapters, *run.merge_args,
            "--out", str(export_dir(out, run)), "--overwrite"]  # fmt: skip


def eval_argv(
    out: Path,
    p: Preset,
    run: Run,
    runs: dict[str, Run],
    benchmarks: list[str],
    data_root: str | None,
    adapter: bool,
) -> list[str]:
    """``rlvr evaluate`` arguments of ``run``; ``adapter``: its export is a LoRA adapter (on its start model)."""
    if run.kind == "model":
        model, extra = str(run.model), []
    elif adapter:
        model, extra = str(start_model(out, p, run, runs)), ["--adapter", str(export_dir(out, run))]
        if model == "None":
            raise ValueError(
                f"run {run.name}: a LoRA adapter on the tiny model needs init_from (a saved base)"
            )
    else:
        model, extra = str(export_dir(out, run)), []
    argv = ["evaluate", "--model", model, *extra, "--benchmarks", ",".join(benchmarks)]
    argv += [a for k, v in p.eval.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    if data_root:
        argv += ["--data-root", str(data_root)]
    return argv + ["--out", str(run_dir(out, run) / "eval"), "--overwrite"]


def write_fragments(out: Path, p: Preset, runs: list[Run]) -> None:
    """The preset's and each run's config fragment as YAML under ``<out>/configs`` (named by :func:`fit_argv`)."""
    (out / "configs").mkdir(parents=True, exist_ok=True)
    if p.fit:
        (out / "configs" / "preset.yaml").write_text(yaml.safe_dump(p.fit, sort_keys=False))
    for run in runs:
        if run.fragment:
            (out / "configs" / f"{run.name}.yaml").write_text(yaml.safe_dump(run.fragment, sort_keys=False))
