"""Interleaving tasks: probabilities, determinism, resumption, DDP sharding, per-sample task identity."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import pytest

from data_modules.mixture import MixtureDataModule, MixtureStream, mixture_probs
from rlvr.domains.base import Example


@dataclass
class ListTask:
    name: str
    n: int
    components: tuple = ("strict_format",)
    weights: dict = field(default_factory=dict)
    accuracy_component: str = "strict_format"

    def examples(self, split):
        return [Example(self.name, [{"role": "user", "content": f"{self.name}-{split}-{i}"}], {"i": i}, uid=f"{self.name}/{i}")
                for i in range(self.n if split == "train" else 5)]  # fmt: skip

    def score(self, completion, reference):
        return {"strict_format": 0.0}


def test_mixture_probabilities_by_hand():
    sizes = {"a": 100, "b": 300}
    assert mixture_probs(sizes, None, "proportional", 1.0) == pytest.approx({"a": 0.25, "b": 0.75})
    assert mixture_probs(sizes, None, "uniform", 1.0) == pytest.approx({"a": 0.5, "b": 0.5})
    # T=2: sqrt(100)=10, sqrt(300)=17.32 -> 0.366, 0.634
    assert mixture_probs(sizes, None, "temperature", 2.0)["a"] == pytest.approx(10 / (10 + 300**0.5))
    assert mixture_probs(sizes, {"a": 3.0}, "proportional", 1.0) == pytest.approx({"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match="mixing"):
        mixture_probs(sizes, None, "zipf", 1.0)


def test_stream_follows_probabilities_and_exhausts_before_repeating():
    data = {"a": ListTask("a", 50).examples("train"), "b": ListTask("b", 50).examples("train")}
    draws = list(itertools.islice(MixtureStream(data, {"a": 0.2, "b": 0.8}, seed=1), 2000))
    counts = Counter(ex.task for ex in draws)
    assert 0.17 < counts["a"] / 2000 < 0.23
    first_a = [ex.uid for ex in draws if ex.task == "a"][:50]
    assert len(set(first_a)) == 50  # a full pass before any repeat


def test_stream_is_seeded_and_resumable():
    data = {"a": ListTask("a", 7).examples("train"), "b": ListTask("b", 11).examples("train")}
    probs = {"a": 0.5, "b": 0.5}
    full = [ex.uid for ex in itertools.islice(MixtureStream(data, probs, 3), 60)]
    assert full == [ex.uid for ex in itertools.islice(MixtureStream(data, probs, 3), 60)]
    assert full != [ex.uid for ex in itertools.islice(MixtureStream(data, probs, 4), 60)]
    s = MixtureStream(data, probs, 3)
    head = [ex.uid for ex in itertools.islice(iter(s), 25)]
    resumed = MixtureStream(data, probs, 3)
    resumed.state = {"draws": s.state["draws"], "cursor": dict(s.state["cursor"])}
    assert head + [ex.uid for ex in itertools.islice(iter(resumed), 35)] == full


def test_datamodule_batches_mix_tasks_and_keep_identity():
    dm = MixtureDataModule([ListTask("math", 40), ListTask("sql", 40)], prompts_per_step=16, mixing="uniform")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 16 and {ex.task for ex in batch} == {"math", "sql"}
    assert all(ex.uid.startswith(ex.task) for ex in batch)
    state = dm.state_dict()
    assert state["stream"]["draws"] >= 16
    val = dm.val_examples()
    assert Counter(ex.task for ex in val) == {"math": 5, "sql": 5}


def test_datamodule_rejects_bad_configuration():
    with pytest.raises(ValueError, match="duplicate"):
        MixtureDataModule([ListTask("a", 3), ListTask("a", 3)])
    with pytest.raises(ValueError, match="unknown task"):
        MixtureDataModule([ListTask("a", 3)], mixing_weights={"b": 1.0})
    with pytest.raises(ValueError, match="empty"):
        MixtureDataModule([])
