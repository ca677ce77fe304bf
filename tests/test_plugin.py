"""The README's "Your own task" example, run as a user would: a task outside the package, named by class_path.

The files are taken from README.md itself (``<!-- plugin: NAME -->`` blocks), so the documented example is the
tested one. It must train through SFT into RL, validate, log its own per-component rewards and val accuracy,
and be scorable by ``rlvr score --tasks``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from run_cli import fit_command

from rlvr.domains.base import check_task

REPO = Path(__file__).resolve().parents[1]


def readme_files() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    return dict(re.findall(r"<!-- plugin: (\S+) -->\n```\w+\n(.*?)```", text, re.S))


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    files = readme_files()
    assert set(files) == {"my_tasks.py", "reverse.yaml"}, sorted(files)
    d = tmp_path_factory.mktemp("plugin")
    for name, body in files.items():
        (d / name).write_text(body)
    return d


def _env(plugin_dir: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(plugin_dir), RLVR_CACHE=str(cache), HF_HUB_OFFLINE="1")
    return env


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_the_example_is_a_task_by_duck_typing(plugin_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_dir))
    import my_tasks

    task = my_tasks.ReverseTask(num_train=50, num_val=20)
    check_task(task)
    train, val = task.examples("train"), task.examples("val")
    assert len(train) == 50 and len(val) == 20
    assert not {e.reference["answer"] for e in train} & {e.reference["answer"] for e in val}
    gold = task.score(train[0].solution, train[0].reference)
    assert gold == {"correct": 1.0, "strict_format": 1.0}
    assert task.score("<answer>nope</answer>", train[0].reference)["correct"] == 0.0


def test_the_example_trains_validates_and_logs_like_a_built_in_task(plugin_dir, tmp_path):
    runs = tmp_path / "runs"
    cmd = fit_command(plugin_dir / "reverse.yaml", extra=(
        "--trainer.max_steps=4", "--trainer.val_check_interval=4", f"--trainer.logger.init_args.save_dir={runs}",
        "--model.hybrid.schedule=step", "--model.hybrid.start=1.0", "--model.hybrid.end=0.0",
        "--model.hybrid.switch_fraction=0.5", "--model.completions_per_prompt=4", "--model.max_new_tokens=24",
        "--data.prompts_per_step=4", "--data.val_prompts_per_task=8", "--model.tiny.corpus_size=200",
    ))  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(plugin_dir, tmp_path / "cache"), capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (runs / "default").iterdir()
    scalars = _scalars(run_dir)
    for tag in (
        "reward/reverse/correct",
        "reward/reverse/strict_format",
        "accuracy/reverse",
        "val/reverse/accuracy",
    ):
        assert tag in scalars, sorted(scalars)
    assert [s for s, _ in scalars["reward/reverse/correct"]] == [2, 3]  # the two RL steps, after 2 SFT steps
    assert (run_dir / "export" / "config.json").is_file()


def test_rlvr_score_scores_the_example_with_tasks_file(plugin_dir, tmp_path):
    lines = [
        {
            "task": "reverse",
            "completion": "<reasoning>\nr\n</reasoning>\n<answer>\ncba\n</answer>",
            "answer": "cba",
        },
        {"task": "reverse", "completion": "<answer>abc</answer>", "answer": "cba"},
        {"task": "math", "completion": "<answer>4</answer>", "answer": "4"},
        {"task": "nope", "completion": "x"},
    ]
    src = tmp_path / "preds.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "scored.jsonl"
    cmd = [sys.executable, "-m", "rlvr", "score", "--tasks", str(plugin_dir / "reverse.yaml"),
           "--input", str(src), "--output", str(out)]  # fmt: skip
    done = subprocess.run(
        cmd, env=_env(plugin_dir, tmp_path / "cache"), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["correct", "wrong_answer", "correct", "invalid_input"]
    assert rows[0]["rewards"] == {"correct": 1.0, "strict_format": 1.0} and rows[0]["reward"] == 1.25
    assert rows[0]["max_reward"] == 1.25 and rows[1]["reward"] == 0.0
    assert "unknown task 'nope'" in rows[3]["error"]


def test_a_class_missing_part_of_the_protocol_is_refused_in_one_line(plugin_dir, tmp_path):
    (plugin_dir / "broken_tasks.py").write_text("class NoScore:\n    name = 'x'\n    components = ('a',)\n")
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("data:\n  init_args:\n    tasks:\n      - class_path: broken_tasks.NoScore\n")
    cmd = fit_command(cfg)
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(plugin_dir, tmp_path / "cache"), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "NoScore is not a task" in err[0] and "score" in err[0], err
    assert not (tmp_path / "runs").exists()
