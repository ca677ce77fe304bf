"""Experiment runners: every preset's run list resolves through the real CLI parsers (offline, no weights), and
a smoke run of the multitask experiment writes its results directory, merged rows included."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from rlvr.cli import build_cli, main
from rlvr.eval.benchmarks import BENCHMARKS, parse_names
from rlvr.eval.cli import _evaluate_parser
from rlvr.experiments import EXPERIMENTS
from rlvr.experiments.plan import (
    CONFIGS,
    SFT_ONLY,
    eval_argv,
    fit_argv,
    merge_argv,
    start_model,
    write_fragments,
)
from rlvr.experiments.runner import resolve, run_experiment
from rlvr.merge import _parser as merge_parser

PRESETS = [(e, p.stem) for e in EXPERIMENTS for p in sorted((CONFIGS / "experiment" / e).glob("*.yaml"))]


def test_every_experiment_has_the_three_presets():
    for exp in EXPERIMENTS:
        assert {"tiny", "qwen0.5b", "coder7b-qlora"} <= {p for e, p in PRESETS if e == exp}, exp


@pytest.mark.parametrize("exp, preset", PRESETS, ids=lambda x: x)
def test_run_list_resolves_through_the_cli(exp, preset, tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p, runs, benchmarks = resolve(exp, preset)
    by_name = {r.name: r for r in runs}
    assert len(by_name) == len(runs) and runs[0].name == "base"
    write_fragments(tmp_path, p, runs)
    for run in runs:
        if run.kind == "fit":
            argv = fit_argv(tmp_path, p, run, by_name)
            cli = build_cli(argv[1:], run=False)  # parses and instantiates; weights load only in fit
            assert cli.trainer.max_steps == run.steps
            assert Path(cli.trainer.logger.log_dir) == tmp_path / "runs" / run.name
            start = start_model(tmp_path, p, run, by_name)
            assert cli.model.name_or_path == (start or "tiny")
            if run.init_from is not None and by_name[run.init_from].kind == "fit":
                assert start == str(tmp_path / "runs" / run.init_from / "export")
            if exp == "multitask" and run.name != "base":
                assert cli.model.hparams["lora"]["r"] > 0  # merging needs adapters on one base
            if exp == "reward_ablation" and run.name != "base":
                assert cli.datamodule.tasks["math"].weights == {**_defaults(), **run.fragment["data"]["tasks"][0]["init_args"]["weights"]}  # fmt: skip
        elif run.kind == "merge":
            args = merge_parser().parse_args(merge_argv(tmp_path, p, run, by_name)[1:])
            assert len(args.adapters) == len(run.adapters)
        ev = _evaluate_parser().parse_args(eval_argv(tmp_path, p, run, by_name, benchmarks, None, run.kind == "merge")[1:])  # fmt: skip
        assert parse_names(ev.benchmarks) == benchmarks


def _defaults():
    from rlvr.domains.math.task import DEFAULT_WEIGHTS

    return dict(DEFAULT_WEIGHTS)


def test_run_lists_hold_the_designed_comparisons(tmp_path):
    _, runs, benchmarks = resolve("multitask", "tiny")
    assert [r.name for r in runs] == ["base", "math", "sql", "code", "multi", "merged-linear", "merged-ties"]
    # the tiny base is trained (SFT) and saved first
    assert len(benchmarks) == len(BENCHMARKS) == 10 and runs[0].kind == "fit"
    assert all(r.init_from == "base" for r in runs[1:])
    assert "--density" in runs[-1].merge_args and runs[-1].adapters == ("math", "sql", "code")
    # every fit runs its task config's own schedule (no pinned older one): the base multi.yaml's SFT, 300 steps
    assert runs[0].steps == 300 and "--model.lora.r=0" in runs[0].overrides
    assert set(runs[0].overrides) == {*SFT_ONLY, "--model.lora.r=0"}
    for run in runs[1:5]:  # the adapters: LoRA on the base, nothing else
        assert run.overrides == ("--model.lora.r=8", "--model.lora.alpha=16"), run.name
    # a preset's task_overrides reach that task's adapter run only ("multi": the joint one)
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump({"steps": 5, "options": {"base_overrides": ["--model.lr=1.0e-3"],
                                      "task_overrides": {"sql": ["--model.lr=2.0e-3"], "multi": ["--seed_everything=3"]}}}))  # fmt: skip
    by_name = {r.name: r for r in resolve("multitask", str(custom))[1]}
    assert by_name["base"].overrides[-1] == "--model.lr=1.0e-3"
    assert (
        by_name["sql"].overrides[-1] == "--model.lr=2.0e-3"
        and by_name["multi"].overrides[-1] == "--seed_everything=3"
    )
    assert (
        by_name["math"].overrides
        == by_name["code"].overrides
        == ("--model.lora.r=8", "--model.lora.alpha=16")
    )
    _, runs, _ = resolve("multitask", "qwen0.5b")
    assert runs[0].kind == "model" and runs[0].model == "Qwen/Qwen2.5-0.5B-Instruct"
    preset, runs, benchmarks = resolve("sft_rl", "tiny")
    # the base trains at math.yaml's SFT schedule (no pinned older one)
    assert not any(a.startswith(("--model.lr=", "--model.hybrid.sft_lr_floor=")) for a in preset.overrides)
    names = [r.name for r in runs]
    assert benchmarks == ["gsm8k", "math500", "gen_math"]
    for method in ("rl", "sft-rl", "hybrid-const", "hybrid-sched"):
        assert {method, f"{method}+ent"} <= set(names)
    assert "sft" in names and "sft+ent" not in names
    # the tiny methods all start from one saved SFT base, each stage at its own lr
    assert runs[0].kind == "fit" and runs[0].steps == 300 and all(r.init_from == "base" for r in runs[1:])
    # every stage of every method at one lr: the SFT ones at math.yaml's rl_lr, which the GRPO ones keep
    by_name = {r.name: r for r in runs}
    for name in ("sft", "sft-rl", "sft-rl+ent", "hybrid-sched", "hybrid-sched+ent"):
        assert "--model.lr=3.0e-5" in by_name[name].overrides, name
    assert not any("rl_lr" in a for r in runs for a in r.overrides)
    math_yaml = yaml.safe_load((CONFIGS / "task" / "math.yaml").read_text())
    assert float(math_yaml["model"]["hybrid"]["rl_lr"]) == 3.0e-5
    _, runs, _ = resolve("sft_rl", "qwen0.5b")
    assert runs[0].kind == "model" and all(r.init_from is None for r in runs[1:])
    _, runs, _ = resolve("reward_ablation", "tiny")
    assert [r.name for r in runs] == ["base", "format-exact", "number-soft", "length", "lcpo"]
    # the reward sets: pure GRPO from one saved SFT base (the base itself runs none of their overrides)
    assert runs[0].kind == "fit" and runs[0].steps == 300 and all(r.init_from == "base" for r in runs[1:])
    assert all("--model.hybrid.start=0.0" in r.overrides for r in runs[1:])
    assert "--model.hybrid.start=0.0" not in runs[0].overrides


def test_bad_presets_fail_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nstepz: 4\n")
    with pytest.raises(ValueError, match="unknown keys"):
        resolve("multitask", str(bad))
    bad.write_text("steps: 3\noptions: {base_stepz: 2}\n")
    with pytest.raises(ValueError, match="unknown options"):
        resolve("multitask", str(bad))
    bad.write_text("steps: 3\noptions: {method_overrides: {hybird-const: [--model.lr=1.0]}}\n")
    with pytest.raises(ValueError, match=r"method_overrides names \['hybird-const'\]"):
        resolve("sft_rl", str(bad))
    with pytest.raises(ValueError, match="unknown preset"):
        resolve("sft_rl", "nope")
    assert main(["experiment", "--exp", "sft_rl", "--preset", "nope", "--list"]) == 2


def test_multitask_smoke_writes_the_results_directory(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = run_experiment("multitask", "tiny", tmp_path / "mt", data_root=str(shared_data), smoke=True)
    for name in ("table.md", "table.csv", "run.json", "errors_shift.md", "errors_shift.csv", "delta.json"):
        assert (out / name).is_file(), name
    for png in ("curves.png", "benchmarks.png", "delta_heatmap.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    rows = list(csv.DictReader(open(out / "table.csv")))
    names = ["base", "math", "sql", "code", "multi", "merged-linear", "merged-ties"]
    assert [r["run"] for r in rows] == names
    assert all(r["gsm8k/accuracy"] != "" and r["hellaswag/acc_norm"] != "" for r in rows)
    # the adapters trained (LoRA B starts at zero) and the merges are adapters of the same base
    from safetensors.torch import load_file

    for name in ("math", "merged-ties"):
        weights = load_file(out / "runs" / name / "export" / "adapter_model.safetensors")
        assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items()), name
    assert (out / "runs" / "base" / "export" / "model.safetensors").is_file()
    info = json.loads((out / "run.json").read_text())
    assert info["versions"]["torch"] and info["smoke"] and [r["name"] for r in info["runs"]] == names
    for r in info["runs"]:
        assert r["wall_s"] > 0 and r["eval_s"] > 0
        assert (r["config"] is not None) == (r["kind"] == "fit")
    assert info["runs"][1]["config"]["trainer"]["max_steps"] == 4 and info["runs"][1]["seed"]["fit"] == 0
    delta = json.loads((out / "delta.json").read_text())
    assert delta["runs"] == names[1:] and len(delta["delta"][0]) == len(BENCHMARKS)
    shift = list(csv.DictReader(open(out / "errors_shift.csv")))
    assert {r["run"] for r in shift} == set(names[1:])
    assert "merged-ties" in (out / "table.md").read_text()
    # the same command again reuses every finished run instead of training it again
    again = run_experiment("multitask", "tiny", out, data_root=str(shared_data), smoke=True)
    rerun = json.loads((again / "run.json").read_text())["runs"]
    assert all(r["reused"] for r in rerun)
    # a reused run reports the time it took when it ran (its fit/merge + eval), not the lookup
    assert all(r["wall_s"] >= r["eval_s"] > 0 for r in rerun), [(r["name"], r["wall_s"]) for r in rerun]
    # another benchmark list evaluates every run again without training or merging it again
    import rlvr.experiments.multitask as multitask

    monkeypatch.setattr(multitask, "BENCHMARKS", ["gen_math"])
    export = out / "runs" / "math" / "export" / "adapter_model.safetensors"
    trained_at = export.stat().st_mtime_ns
    third = json.loads((run_experiment("multitask", "tiny", out, data_root=str(shared_data), smoke=True)
                        / "run.json").read_text())["runs"]  # fmt: skip
    assert all(not r["reused"] and r["reused_training"] for r in third)
    assert [r.get("fit_s") for r in third] == [
        r.get("fit_s") for r in rerun
    ] and export.stat().st_mtime_ns == trained_at
    assert set(json.loads((out / "runs" / "math" / "eval" / "metrics.json").read_text())) == {"gen_math"}


def test_error_shift_shows_zero_for_a_category_a_run_never_hit():
    from rlvr.eval.store import RunResult
    from rlvr.experiments.results import error_shift_rows, errors_markdown

    def run(**counts: int) -> RunResult:
        return RunResult({}, [], {"gsm8k": {c: {"count": n} for c, n in counts.items()}})

    results = {"base": run(wrong_answer=4), "a": run(correct=1, wrong_answer=3), "b": run(format_error=4)}
    rows = error_shift_rows(results, "base")
    cell = {(r["run"], r["category"]): r for r in rows}
    assert cell[("b", "correct")]["after"] == 0.0 and cell[("a", "format_error")]["after"] == 0.0
    assert cell[("b", "wrong_answer")]["delta"] == -1.0
    table = errors_markdown(rows, "base")
    assert "| correct | 0% | 25% (+25%) | 0% (+0%) |" in table and "–" not in table
