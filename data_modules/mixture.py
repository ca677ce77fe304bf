"""Interleave the prompts of several tasks by weight into training batches (seeded and resumable).

Each batch is a list of :class:`rlvr.domains.base.Example`; tasks may mix inside a batch, and every example
keeps its task name and reference, so rollout, scoring and loss stay aligned per sample.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from data_modules.curriculum import Curriculum
from rlvr.domains.base import Example, check_task
from rlvr.domains.registry import build_task

MIXING = ("proportional", "temperature", "uniform")


def mixture_probs(
    sizes: Mapping[str, int], weights: Mapping[str, float] | None, mixing: str, temperature: float
):
    """Sampling probability of each task.

    proportional: ∝ weight · size;  temperature: ∝ (weight · size)^(1/T) (T > 1 flattens);  uniform: equal.
    """
    if mixing not in MIXING:
        raise ValueError(f"mixing={mixing!r}: choose one of {MIXING}")
    names = sorted(sizes)
    w = {n: float((weights or {}).get(n, 1.0)) for n in names}
    if mixing == "uniform":
        raw = {n: 1.0 for n in names}
    else:
        power = 1.0 if mixing == "proportional" else 1.0 / temperature
        raw = {n: (w[n] * sizes[n]) ** power for n in names}
    z = sum(raw.values())
    if z <= 0:
        raise ValueError("mixture weights are all zero: give at least one task a positive weight")
    return {n: raw[n] / z for n in names}


class MixtureStream(IterableDataset):
    """An endless, seeded stream of examples drawn from several tasks by probability.

    Every task is walked through a fresh seeded permutation per pass, so no example repeats before its task's
    data is exhausted. The position is a plain dict (``state``) for resuming. Under DDP the stream advances
    in rounds of world-size draws and each rank yields its own draw of a round, so after every yield the
    position is the same on every rank (one saved position resumes them all, at any world size).
    """

    def __init__(
        self,
        data: Mapping[str, Sequence[Example]],
        probs: Mapping[str, float],
        seed: int | str,
        curriculum: Curriculum | None = None,
    ):
        self.probs, self.seed, self.curriculum = probs, seed, curriculum
        # a curriculum splits each task into per-level pools; draws pick a task, then its pool at that draw
        self.data = curriculum.pools(data) if curriculum is not None else dict(data)
        self.state: dict[str, Any] = {"draws": 0, "cursor": {n: 0 for n in self.data}}

    def _order(self, task: str, epoch: int) -> list[int]:
        order = list(range(len(self.data[task])))
        random.Random(f"{self.seed}/{task}/{epoch}").shuffle(order)
        return order

    def __iter__(self) -> Iterator[Example]:
        names = sorted(self.probs)
        weights = [self.probs[n] for n in names]
        orders: dict[tuple[str, int], list[int]] = {}
        while True:
            rank, world = _rank_world()
            mine = None
            for _ in range(world):  # one round: every rank's draw, this rank keeps its own
                k = self.state["draws"]
                task = random.Random(f"{self.seed}/draw/{k}").choices(names, weights)[0]
                if self.curriculum is not None:
                    task = self.curriculum.pool(task, k)
                cur = self.state["cursor"][task]
                epoch, pos = divmod(cur, len(self.data[task]))
                if (task, epoch) not in orders:
                    orders = {key: v for key, v in orders.items() if key[0] != task}  # one pass per task
                    orders[(task, epoch)] = self._order(task, epoch)
                self.state["draws"] = k + 1
                self.state["cursor"][task] = cur + 1
                if k % world == rank:
                    mine = self.data[task][orders[(task, epoch)][pos]]
            yield mine

    def position(self) -> dict[str, Any]:
        return {"draws": self.state["draws"], "cursor": dict(self.state["cursor"])}

    def seek(self, position: Mapping[str, Any]) -> None:
        self.state = {
            "draws": int(position["draws"]),
            "cursor": {**self.state["cursor"], **position["cursor"]},
        }


class PromptBatch(list):
    """A training batch (a list of Examples) that remembers the stream position right after it, so the data
    module can save the position of what training consumed, not of what the loader prefetched."""

    position: dict[str, Any]


class MixtureDataModule(L.LightningDataModule):
    """Training prompts interleaved from several tasks; validation on each task's held-out split.

    Args:
        tasks: the tasks (``class_path`` / ``init_args`` in YAML), names must be unique. Any class with the
            attributes and methods of :class:`rlvr.Task` is accepted (duck typing; checked here, one line
            naming what is missing).
        prompts_per_step: prompts in one training batch (each gets ``completions_per_prompt`` samples).
        mixing: proportional | temperature | uniform (see :func:`mixture_probs`).
        mixing_weights: task name -> weight (default 1 each).
        mixing_temperature: T for ``temperature`` mixing.
        val_prompts_per_task: held-out prompts per task used in validation (0 = all).
        val_batch_size: prompts per validation batch.
        seed: seeds the interleaving.
        curriculum: a :class:`data_modules.curriculum.Curriculum` moving each task's training difficulty with
            its success on the training rollouts (validation stays on each task's configured split).
    """

    def __init__(
        self,
        tasks: list[Any],
        prompts_per_step: int = 8,
        mixing: str = "proportional",
        mixing_weights: dict[str, float] | None = None,
        mixing_temperature: float = 1.0,
        val_prompts_per_task: int = 100,
        val_batch_size: int = 32,
        seed: int = 0,
        curriculum: Curriculum | None = None,
    ):
        super().__init__()
        if not tasks:
            raise ValueError("data.tasks is empty: configure at least one task (see configs/task/*.yaml)")
        for task in tasks:
            if isinstance(task, Mapping) or hasattr(
                task, "class_path"
            ):  # an entry the parser could not build
                build_task(
                    task if isinstance(task, Mapping) else _as_dict(task)
                )  # raises the reason, one line
                raise ValueError(
                    f"data.tasks entry {dict(task)} was not built: check its class_path and init_args"
                )
            check_task(task)
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate task names {names}: each task may appear once")
        unknown = set(mixing_weights or {}) - set(names)
        if unknown:
            raise ValueError(f"mixing_weights names unknown task(s) {sorted(unknown)}; tasks are {names}")
        if prompts_per_step < 1:
            raise ValueError("prompts_per_step must be >= 1")
        mixture_probs({n: 1 for n in names}, mixing_weights, mixing, mixing_temperature)  # validate early
        self.tasks = {t.name: t for t in tasks}
        self.prompts_per_step, self.val_batch_size = prompts_per_step, val_batch_size
        self.mixing, self.mixing_weights, self.mixing_temperature = mixing, mixing_weights, mixing_temperature
        self.val_prompts_per_task, self.seed, self.curriculum = val_prompts_per_task, seed, curriculum
        self.stream: MixtureStream | None = None
        self.refill_stream: MixtureStream | None = None  # DAPO refills: their own stream, never prefetched
        self._refills: Iterator[Example] | None = None
        self.consumed: dict[str, Any] | None = None  # stream position after the last batch training took

    def setup(self, stage: str | None = None) -> None:
        if self.stream is None:
            train = {n: list(t.examples("train")) for n, t in self.tasks.items()}
            empty = [n for n, d in train.items() if not d]
            if empty:
                raise ValueError(f"task(s) {empty} have no training examples: check their source and path")
            probs = mixture_probs({n: len(d) for n, d in train.items()}, self.mixing_weights, self.mixing,
                                  self.mixing_temperature)  # fmt: skip
            self.stream = MixtureStream(train, probs, self.seed, self.curriculum)
            self.refill_stream = MixtureStream(
                train, probs, f"{self.seed}/refill"
            )  # refills: configured levels

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(
            self.stream, batch_size=self.prompts_per_step, collate_fn=self._collate, num_workers=0
        )

    def _collate(self, examples: list[Example]) -> PromptBatch:
        batch = PromptBatch(
            examples
        )  # in-process loader: the stream has just drawn this batch's last example
        batch.position = self.stream.position()
        return batch

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Called as training takes a batch (after the loader prefetched the next one): that is the position
        a resumed run must continue from."""
        if isinstance(batch, PromptBatch) and self.trainer is not None and self.trainer.training:
            self.consumed = batch.position
        return batch

    def observe_rewards(self, examples: Sequence[Example], correct: Sequence[float]) -> dict[str, float]:
        """The module reports each training step's scored completions (one example per completion); the
        curriculum, when there is one, updates its levels. Returns the scalars to log."""
        if self.curriculum is None or self.stream is None:
            return {}
        return self.curriculum.observe(examples, correct, self.stream.state["draws"])

    def draw(self, n: int) -> list[Example]:
        """``n`` more training prompts (DAPO dynamic-sampling refills), from a stream of their own so the
        main stream's order does not depend on how many refills a step needed."""
        self.setup()
        if self._refills is None:
            self._refills = iter(self.refill_stream)
        return list(itertools.islice(self._refills, n))

    def val_examples(self) -> list[Example]:
        out: list[Example] = []
        for name in sorted(self.tasks):
            val = list(self.tasks[name].examples("val"))
            out += val[: self.val_prompts_per_task] if self.val_prompts_per_task else val
        return out

    def val_dataloader(self) -> DataLoader:
        rank, world = _rank_world()
        shard = self.val_examples()[rank::world]
        return DataLoader(shard, batch_size=self.val_batch_size, collate_fn=list, shuffle=False)

    def tokenizer_corpus(self, per_task: int) -> list[str]:
        """Texts to train the tiny model's tokenizer on: prompts and gold solutions of every task."""
        texts: list[str] = []
        for name in sorted(self.tasks):
            for ex in list(self.tasks[name].examples("train"))[:per_task]:
                texts += [m["content"] for m in ex.messages] + ([ex.solution] if ex.solution else [])
        return texts

    def state_dict(self) -> dict[str, Any]:
        """The position after the last batch training consumed (the same on every rank) and the refills'."""
        if self.stream is None:
            return {}
        state = {"stream": self.consumed or self.stream.position(), "refills": self.refill_stream.position()}
        if self.curriculum is not None:
            state["curriculum"] = self.curriculum.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.setup()
        if "stream" in state:
            self.stream.seek(state["stream"])
            self.consumed = self.stream.position()
        if "refills" in state:
            self.refill_stream.seek(state["refills"])
        if self.curriculum is not None and "curriculum" in state:
            self.curriculum.load_state_dict(state["curriculum"])


def _as_dict(ns: Any) -> dict:
    return ns.as_dict() if hasattr(ns, "as_dict") else dict(vars(ns))


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
