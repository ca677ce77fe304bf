"""The placebo control (examples/placebo.py): its training reward carries no information about correctness,
while validation accuracy stays the real verifier's."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlvr.rewards import score_async

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def placebo(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    sys.modules.pop("placebo", None)
    import placebo

    return placebo


def rewards(task, completions, examples):
    with ThreadPoolExecutor(1) as pool:
        return score_async(pool, {task.name: task}, [task.name] * len(completions), completions,
                           [e.reference for e in examples])()  # fmt: skip


def test_the_placebo_reward_is_a_coin_that_ignores_correctness(placebo):
    task = placebo.PlaceboMath(p=0.75)
    val = list(task.examples("val"))
    gold = rewards(task, [e.solution for e in val], val)
    wrong = rewards(task, ["The answer is #### 123456" for _ in val], val)
    assert (
        gold.correct.mean() == 1.0 and wrong.correct.mean() == 0.0
    )  # validation accuracy: the real verifier
    for batch in (gold, wrong):  # the training reward: the coin alone, ~p of the time, right or wrong
        coin = batch.values[:, batch.names.index("coin")]
        assert batch.total.tolist() == coin.tolist()
        assert 0.65 < coin.mean().item() < 0.85, coin.mean()
    # judge (rlvr score, error analysis) reports the same components as score
    assert task.judge(val[0].solution, val[0].reference).components == task.score(
        val[0].solution, val[0].reference
    )
    # a verifier's property: the same completion of the same prompt gets the same reward
    assert rewards(task, [e.solution for e in val], val).total.tolist() == gold.total.tolist()


@pytest.mark.parametrize(("name", "cls", "accuracy"), [("math", "PlaceboMath", "correctness"),
                                                       ("code", "PlaceboCode", "all_tests_pass")])  # fmt: skip
def test_the_placebo_configs_instantiate_with_the_real_accuracy_component(name, cls, accuracy, placebo, tmp_path,
                                                                           monkeypatch):  # fmt: skip
    from rlvr.cli import build_cli

    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    configs = ["configs/base.yaml", f"configs/task/{name}.yaml", f"examples/placebo_{name}.yaml"]
    cli = build_cli([a for c in configs for a in ("--config", str(ROOT / c))], run=False)
    (task,) = cli.datamodule.tasks.values()
    assert isinstance(task, getattr(placebo, cls)) and task.accuracy_component == accuracy
    assert task.weights["coin"] == 1.0
    with pytest.raises(ValueError, match="p must be in"):
        getattr(placebo, cls)(p=1.0)


def test_the_code_placebo_still_runs_the_tests_and_adds_the_coin(placebo):
    task = placebo.PlaceboCode(p=0.5, difficulty=3)
    val = list(task.examples("val"))[:8]
    batch = rewards(task, [e.solution for e in val] + ["def f(:"] * 8, val + val)
    assert batch.correct.tolist() == [1.0] * 8 + [0.0] * 8
    assert batch.total.tolist() == batch.values[:, batch.names.index("coin")].tolist()
