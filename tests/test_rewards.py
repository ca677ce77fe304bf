"""Components of several tasks as one masked matrix; per-task means are not diluted by other tasks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import torch

from rlvr.rewards import add_component, assemble, component_columns, score_async


@dataclass
class FakeTask:
    name: str
    components: tuple[str, ...]
    weights: dict = field(default_factory=dict)
    accuracy_component: str = ""

    def examples(self, split):
        return []

    def score(self, completion, reference):
        return {c: float(reference[c]) for c in self.components}


TASKS = {
    "math": FakeTask(
        "math", ("strict_format", "correctness"), {"strict_format": 0.5, "correctness": 2.0}, "correctness"
    ),
    "sql": FakeTask(
        "sql",
        ("strict_format", "sql_result_match"),
        {"strict_format": 1.0, "sql_result_match": 3.0},
        "sql_result_match",
    ),  # fmt: skip
}


def test_columns_are_the_union_in_stable_order():
    assert component_columns(TASKS) == ["strict_format", "correctness", "sql_result_match"]


def test_mask_weights_and_totals_by_hand():
    rb = assemble(
        TASKS,
        ["math", "sql", "math"],
        [
            {"strict_format": 1.0, "correctness": 1.0},
            {"strict_format": 0.0, "sql_result_match": 1.0},
            {"strict_format": 1.0, "correctness": 0.0},
        ],
    )
    assert rb.mask.tolist() == [[True, True, False], [True, False, True], [True, True, False]]
    # math: 0.5*1 + 2*1 = 2.5 ; sql: 1*0 + 3*1 = 3 ; math: 0.5*1 + 0 = 0.5
    assert rb.total.tolist() == pytest.approx([2.5, 3.0, 0.5])
    assert rb.correct.tolist() == [1.0, 1.0, 0.0]
    means = rb.means()
    # correctness averaged over the two math samples only (not diluted to 1/3 by the sql sample)
    assert means["reward/math/correctness"] == pytest.approx(0.5)
    assert means["reward/sql/sql_result_match"] == pytest.approx(1.0)
    assert "reward/sql/correctness" not in means and "reward/math/sql_result_match" not in means
    assert means["reward/math/strict_format"] == pytest.approx(1.0)
    assert means["reward/sql/strict_format"] == pytest.approx(0.0)
    assert means["reward/total"] == pytest.approx(2.0)
    assert means["accuracy/math"] == pytest.approx(0.5)


def test_score_async_keeps_sample_order_across_tasks():
    refs = [
        {"strict_format": 1, "correctness": 0},
        {"strict_format": 0, "sql_result_match": 1},
        {"strict_format": 0, "correctness": 1},
    ]
    with ThreadPoolExecutor(2) as pool:
        rb = score_async(pool, TASKS, ["math", "sql", "math"], ["a", "b", "c"], refs)()
    assert rb.total.tolist() == pytest.approx([0.5, 3.0, 2.0])
    assert torch.equal(rb.correct, torch.tensor([0.0, 1.0, 1.0]))


def test_unknown_task_is_named():
    with ThreadPoolExecutor(1) as pool, pytest.raises(KeyError, match="code"):
        score_async(pool, TASKS, ["code"], ["x"], [{}])


def test_overlong_component_joins_the_total_and_the_logs():
    rb = assemble(
        TASKS,
        ["math", "sql"],
        [{"strict_format": 1.0, "correctness": 1.0}, {"strict_format": 1.0, "sql_result_match": 0.0}],
    )
    out = add_component(rb, "overlong", torch.tensor([0.0, -0.5]), weight=2.0)
    assert out.names[-1] == "overlong" and out.mask[:, -1].all()
    # math 2.5 + 2*0 ; sql 1.0 + 2*(-0.5) = 0
    assert out.total.tolist() == pytest.approx([2.5, 0.0])
    assert out.total.tolist() == pytest.approx((out.values * out.weights).sum(-1).tolist())  # total == Σ w·c
    means = out.means()
    assert means["reward/sql/overlong"] == -0.5 and means["reward/math/overlong"] == 0.0
    # normalised by each task's maximum (sum of positive weights): math 2.5 / 2.5, sql 0 / 4
    assert means["reward/math/normalised"] == pytest.approx(1.0) and means["reward/sql/normalised"] == 0.0
