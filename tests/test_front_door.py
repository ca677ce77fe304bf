"""The front door: `rlvr --help`, unknown commands, where `rlvr evaluate` writes (and what it refuses to
replace), and hub ids failing fast when there is no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlvr.cli import main as rlvr_main
from rlvr.domains.base import DataError
from rlvr.domains.sources import read_json_records
from rlvr.eval.cli import default_run_name
from rlvr.eval.store import RunResult, SampleResult, load_run, write_run

# ------------------------------------------------------------------------------------------ rlvr itself


def test_help_lists_every_command(capsys):
    assert rlvr_main(["--help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert listed == ["fit", "validate", "score", "evaluate", "compare", "report", "merge", "experiment"]


def test_unknown_command_is_one_line_with_did_you_mean(capsys):
    assert rlvr_main(["fitt"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "unknown command 'fitt'" in err[0] and "did you mean 'fit'" in err[0], err
    assert captured.out == ""


# ---------------------------------------------------------------------------------- default_run_name


@pytest.mark.parametrize(
    "model,adapter,predictions,name",
    [
        ("runs/math/version_3/export", None, None, "math-version_3"),
        ("runs/math/version_3/export/", None, None, "math-version_3"),
        ("runs/sql/version_12", None, None, "sql-version_12"),
        ("./ckpt/export", None, None, "ckpt"),
        ("../elsewhere/run7/export", None, None, "elsewhere-run7"),
        ("Qwen/Qwen2.5-0.5B-Instruct", None, None, "Qwen2.5-0.5B-Instruct"),
        ("tiny", None, None, "tiny"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "runs/code/version_1/export", None, "code-version_1"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "adapters/lora-r8", None, "adapters-lora-r8"),
        (None, None, "preds/x.jsonl", "x"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "runs/a/export", "preds/sys-b.jsonl.gz", "sys-b"),
        (None, None, "out.json", "out"),
    ],
)
def test_default_run_name(model, adapter, predictions, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # none of these paths exists: named by their spelling alone
    assert default_run_name(model, adapter, predictions) == name


def test_default_run_name_of_paths_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "qwen").mkdir(parents=True)  # owner/name spelling, but a local directory
    assert default_run_name("models/qwen", None, None) == "models-qwen"
    export = tmp_path / "runs" / "math" / "version_0" / "export"
    export.mkdir(parents=True)  # an absolute path under the working directory: as if given relative
    assert default_run_name(str(export), None, None) == "math-version_0"
    with pytest.raises(ValueError, match="--model"):
        default_run_name(None, None, None)


# ------------------------------------------------------------------------- evaluate: refuse to overwrite


def _arc_gold_predictions(data: Path, path: Path, n: int = 4) -> Path:
    recs = read_json_records(data / "arc_challenge" / "ARC-Challenge-Test.jsonl.gz")[:n]
    with open(path, "w") as f:
        for r in recs:
            f.write(
                json.dumps({"benchmark": "arc_challenge", "id": r["id"], "completion": r["answerKey"]}) + "\n"
            )
    return path


def _earlier_result(d: Path) -> Path:
    d.mkdir(parents=True)
    (d / "metrics.json").write_text('{"earlier": {"acc": 0.5}}\n')
    return d


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_evaluate_refuses_an_existing_result_before_loading_anything(tmp_path, capsys, monkeypatch):
    import rlvr.eval.predictions
    import rlvr.eval.runner
    import rlvr.models

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded data or a model before checking --out")

    for module, name in [(rlvr.models, "load_tokenizer"), (rlvr.models, "load_causal_lm"),
                         (rlvr.eval.runner, "load_benchmarks"), (rlvr.eval.predictions, "score_predictions")]:  # fmt: skip
        monkeypatch.setattr(module, name, must_not_load)
    out = _earlier_result(tmp_path / "eval" / "earlier")
    # a missing predictions file and --data-root would each be an error of their own if they were looked at
    argv = [
        "evaluate",
        "--predictions",
        str(tmp_path / "no-such.jsonl"),
        "--data-root",
        str(tmp_path / "nope"),
    ]
    assert rlvr_main([*argv, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("rlvr evaluate: error: ") and str(out) in line and "--overwrite" in line, line
    assert "--out" in line.replace("--overwrite", "")
    argv = ["evaluate", "--model", "some-org/no-such-model", "--benchmarks", "gsm8k", "--out", str(out)]
    assert rlvr_main(argv) == 2
    assert "--overwrite" in _one_error_line(capsys)
    assert (out / "metrics.json").read_text() == '{"earlier": {"acc": 0.5}}\n'
    assert sorted(p.name for p in out.parent.iterdir()) == ["earlier"]


def test_evaluate_refuses_a_directory_that_is_not_a_result(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert rlvr_main(["evaluate", "--predictions", "p.jsonl", "--out", str(tmp_path), "--overwrite"]) == 2
    assert "no metrics.json" in _one_error_line(capsys)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_evaluate_default_out_is_named_after_the_run_and_overwrite_replaces(
    shared_data, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    preds = _arc_gold_predictions(shared_data, tmp_path / "gold-arc.jsonl")
    argv = ["evaluate", "--predictions", str(preds), "--data-root", str(shared_data)]
    assert rlvr_main(argv) == 0
    out = tmp_path / "runs" / "eval" / "gold-arc"
    assert json.loads((out / "metrics.json").read_text())["arc_challenge"]["acc"] == 1.0
    (out / "metrics.json").write_text('{"earlier": {}}\n')
    capsys.readouterr()
    assert rlvr_main(argv) == 2  # the same run again: the earlier result is kept
    assert str(Path("runs") / "eval" / "gold-arc") in _one_error_line(capsys)
    assert (out / "metrics.json").read_text() == '{"earlier": {}}\n'
    assert rlvr_main([*argv, "--overwrite"]) == 0
    assert set(load_run(out).metrics) == {"arc_challenge"}
    assert [p.name for p in out.parent.iterdir()] == ["gold-arc"]  # no temporary directory left behind
    assert rlvr_main([*argv, "--out-root", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "gold-arc" / "metrics.json").is_file()


# ---------------------------------------------------------------------------------- write_run: atomic


def _run(acc: float) -> RunResult:
    sample = SampleResult("arc_challenge", "q1", 0, "A", acc, "correct" if acc else "wrong_answer")
    return RunResult({"arc_challenge": {"acc": acc, "n": 1}}, [sample], {}, {"model": "m"})


def test_write_run_replaces_a_result_only_with_overwrite(tmp_path):
    out = write_run(tmp_path / "r", _run(1.0), "# one\n")
    assert load_run(out).metrics["arc_challenge"]["acc"] == 1.0
    with pytest.raises(DataError, match="--overwrite"):
        write_run(out, _run(0.0), "# two\n", overwrite=False)
    assert load_run(out).metrics["arc_challenge"]["acc"] == 1.0
    write_run(out, _run(0.0), "# two\n")  # the default, as for PeriodicEval re-evaluating a step
    assert (
        load_run(out).metrics["arc_challenge"]["acc"] == 0.0 and (out / "report.md").read_text() == "# two\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["r"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_run(write_run(empty, _run(1.0), "", overwrite=False)).samples[0].id == "q1"  # empty is free
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="no metrics.json"):  # never deleted, even with overwrite
        write_run(tmp_path / "other", _run(1.0), "")
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


def test_a_crash_while_writing_leaves_the_earlier_result_whole(tmp_path):
    out = write_run(tmp_path / "r", _run(1.0), "# one\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(TypeError):  # report.md is written last: every other new file exists by then
        write_run(out, _run(0.0), None, overwrite=True)  # type: ignore[arg-type]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["r"]
    with pytest.raises(TypeError):  # a first write that crashes leaves no directory at all
        write_run(tmp_path / "new", _run(0.0), None)  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_a_failed_swap_puts_the_earlier_result_back(tmp_path, monkeypatch):
    import rlvr.eval.store as store

    out = write_run(tmp_path / "r", _run(1.0), "# one\n")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new directory into place, after the earlier one was moved aside
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        write_run(out, _run(0.0), "# two\n", overwrite=True)
    assert calls[0][0] == "r" and calls[1][1] == "r" and calls[2][1] == "r", calls
    assert load_run(out).metrics["arc_challenge"]["acc"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


# ----------------------------------------------------------------------- hub ids with no network: fast


def _online_env() -> dict[str, str]:
    """This process's environment without the offline switches: the hub-reachability probe decides."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                            "TRANSFORMERS_OFFLINE", "RLVR_DEBUG")}  # fmt: skip
    return env


_LOAD_TOKENIZER = """
import sys, time
import transformers.models.auto.tokenization_auto  # imported first: the timed part is the failure itself
from rlvr.models import ModelLoadError, load_tokenizer
t = time.monotonic()
try:
    load_tokenizer("some-org/no-such-model")
except ModelLoadError as e:
    print(f"{time.monotonic() - t:.3f}")
    print(e)
    sys.exit(3)
sys.exit("load_tokenizer did not raise ModelLoadError")
"""


def test_hub_id_without_network_fails_in_seconds():
    # without the reachability probe, transformers retries for ~45 s here before giving up
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _LOAD_TOKENIZER], env=_online_env(), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    wall = time.monotonic() - start
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    seconds, *message = proc.stdout.strip().splitlines()
    assert len(message) == 1 and "some-org/no-such-model" in message[0], proc.stdout
    # the failure itself: 5 s (the probe waits 2 s at most); the process also pays for importing transformers
    assert float(seconds) < 5.0, seconds
    assert wall < 30.0, wall


def test_evaluate_with_an_unreachable_hub_id_is_one_line_in_seconds(shared_data, tmp_path):
    argv = [sys.executable, "-m", "rlvr", "evaluate", "--model", "some-org/no-such-model", "--benchmarks", "gsm8k",
            "--data-root", str(shared_data)]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=tmp_path, env=_online_env(), capture_output=True, text=True, timeout=60)
    wall = time.monotonic() - start
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, (proc.returncode, proc.stderr[-2000:])
    assert err[0].startswith("rlvr evaluate: error: cannot load model 'some-org/no-such-model'"), err
    assert wall < 35.0, (
        wall
    )  # imports of torch, transformers and datasets included; the retry path took > 45 s
    assert not (tmp_path / "runs").exists()  # nothing written for a run that never started


# ------------------------------------------------------------------- configuration mistakes, one line each

REPO = Path(__file__).resolve().parents[1]
BASE = [
    "fit",
    "--config",
    str(REPO / "configs" / "base.yaml"),
    "--config",
    str(REPO / "configs" / "task" / "math.yaml"),
]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--data.prompts_per_step=abc"], "abc"),  # the reason, not just "problem with class_path"
        (["--model.rollout.engine=nope"], "unknown rollout engine 'nope'"),
        (["--data.tasks=[{class_path: rlvr.tasks.math.MathTask}]"], "moved to rlvr.domains"),
        (
            ["--data.tasks=[{class_path: rlvr.domains.math.MathTask, init_args: {difficulty: 9}}]"],
            "difficulty",
        ),
    ],
)
def test_fit_configuration_mistakes_are_one_line(extra, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    code = rlvr_main([*BASE, *extra, f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "runs").exists()  # nothing left behind by a run that never started


def test_score_mistakes_are_one_line(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"task": "math", "completion": "x", "answer": "1"}\n')
    bad_yaml = tmp_path / "tasks.yaml"
    bad_yaml.write_text("data: [unclosed\n")
    plugin = tmp_path / "boom_tasks.py"
    plugin.write_text("class Boom:\n    def __init__(self):\n        raise RuntimeError('boom')\n")
    boom_yaml = tmp_path / "boom.yaml"
    boom_yaml.write_text("- class_path: boom_tasks.Boom\n")
    sys.path.insert(0, str(tmp_path))
    try:
        cases = [
            (["--tasks", str(bad_yaml)], "not valid YAML"),
            (["--tasks", str(boom_yaml)], "RuntimeError: boom"),
            (["--output", str(tmp_path)], "is a directory"),
        ]
        for args, needle in cases:
            argv = ["score", "--input", str(src), "--output", str(tmp_path / "out.jsonl"), *args]
            assert rlvr_main(argv) == 2, args
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and needle in err[0], (args, err)
    finally:
        sys.path.remove(str(tmp_path))
