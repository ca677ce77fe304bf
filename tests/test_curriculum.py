"""The per-task curriculum: levels move with training success, draws follow the level in effect at their
index (so a resumed stream replays exactly), and through fit the level climbs while the policy succeeds."""

from __future__ import annotations

import glob

import lightning as L
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data_modules.curriculum import Curriculum
from data_modules.mixture import MixtureDataModule, MixtureStream
from rlvr.domains.base import Example
from rlvr.domains.math.task import MathTask
from rlvr.module import RLVRModule
from rlvr.settings import HybridSchedule, TinyModelSettings


def ex(task: str, i: int, level) -> Example:
    return Example(task=task, messages=[{"role": "user", "content": f"{task} {i}"}], reference={},
                   uid=f"{task}/{i}", meta={"difficulty": level} if level is not None else {})  # fmt: skip


DATA = {"a": [ex("a", i, 1 + i % 3) for i in range(30)], "b": [ex("b", i, None) for i in range(10)]}


def test_levels_move_up_above_the_band_and_down_below_it():
    cur = Curriculum(low=0.2, high=0.8, window=4)
    pools = cur.pools(DATA)
    assert sorted(pools) == ["a@level=1", "a@level=2", "a@level=3", "b"]  # b has no ladder: one pool
    level1 = [e for e in DATA["a"] if e.meta["difficulty"] == 1][:4]
    m = cur.observe(level1[:2], [1.0, 1.0], next_draw=10)
    assert cur.current("a") == 1 and m["curriculum/a/success"] == 1.0  # window not full: no decision yet
    m = cur.observe(level1[2:], [1.0, 1.0], next_draw=12)
    assert cur.current("a") == 2 and m["curriculum/a/difficulty"] == 2.0
    assert cur.pool("a", 11) == "a@level=1" and cur.pool("a", 12) == "a@level=2"  # takes effect at draw 12
    # completions of prompts drawn at the old level (prefetched) do not count for the new one
    cur.observe(level1, [0.0] * 4, next_draw=14)
    assert cur.current("a") == 2
    level2 = [e for e in DATA["a"] if e.meta["difficulty"] == 2][:4]
    cur.observe(level2, [0.0, 0.0, 0.0, 1.0], next_draw=16)  # 0.25: inside the band, stays
    assert cur.current("a") == 2
    cur.observe(level2, [0.0] * 4, next_draw=18)
    assert cur.current("a") == 1 and cur.pool("a", 17) == "a@level=2" and cur.pool("a", 18) == "a@level=1"
    top = Curriculum(window=1, start="highest")
    top.pools(DATA)
    top.observe([e for e in DATA["a"] if e.meta["difficulty"] == 3][:1], [1.0], next_draw=0)
    assert top.current("a") == 3  # already at the top: stays


def test_stream_serves_the_current_level_and_a_resumed_stream_replays_it():
    def run(resume_at=None):
        cur = Curriculum(window=2)
        stream = MixtureStream(DATA, {"a": 0.8, "b": 0.2}, seed=0, curriculum=cur)
        it, drawn = iter(stream), []
        for k in range(40):
            if resume_at == k:  # a fresh stream + curriculum from the saved state, as a resumed run builds
                state, pos = cur.state_dict(), stream.position()
                cur = Curriculum(window=2)
                stream = MixtureStream(DATA, {"a": 0.8, "b": 0.2}, seed=0, curriculum=cur)
                cur.load_state_dict(state)
                stream.seek(pos)
                it = iter(stream)
            drawn.append(next(it))
            if k == 9:  # success on the level-1 prompts -> level 2 from the next draw on
                ones = [e for e in drawn if e.task == "a" and e.meta["difficulty"] == 1][:2]
                cur.observe(ones, [1.0, 1.0], next_draw=stream.state["draws"])
        return drawn

    drawn = run()
    levels = [e.meta["difficulty"] for e in drawn if e.task == "a"]
    first = [e.meta["difficulty"] for e in drawn[:10] if e.task == "a"]
    later = [e.meta["difficulty"] for e in drawn[10:] if e.task == "a"]
    assert set(first) == {1} and set(later) == {2}, levels
    assert [e.uid for e in run(resume_at=25)] == [e.uid for e in drawn]


def test_bad_band_is_one_line():
    with pytest.raises(ValueError, match="band"):
        Curriculum(low=0.9, high=0.5)


class AlwaysRight(MathTask):
    """Every completion is correct: the curriculum must climb."""

    def score(self, completion, reference):
        return {**dict.fromkeys(self.components, 0.0), "correctness": 1.0}


def test_curriculum_climbs_through_fit_and_logs_its_level(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    tiny = TinyModelSettings(vocab_size=600, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                             intermediate_size=128, corpus_size=300)  # fmt: skip
    task = AlwaysRight(num_train=60, num_val=4, train_difficulties=[1, 2, 3])
    module = RLVRModule(tiny=tiny, completions_per_prompt=2, max_new_tokens=8, lr=1e-3,
                        hybrid=HybridSchedule("constant", 0.0, 0.0, 0))  # fmt: skip
    dm = MixtureDataModule([task], prompts_per_step=2, val_prompts_per_task=4, val_batch_size=4,
                           curriculum=Curriculum(window=8))  # fmt: skip
    trainer = L.Trainer(max_steps=6, val_check_interval=6, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                        logger=L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run"), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(module, dm)
    acc = EventAccumulator(
        glob.glob(str(tmp_path / "run" / "**" / "events.out.tfevents*"), recursive=True)[0]
    )
    acc.Reload()
    levels = [e.value for e in acc.Scalars("curriculum/math/difficulty")]
    # 4 completions a step, 8 per decision; the batch prefetched before a change is still of the old level
    assert levels == [1.0, 2.0, 2.0, 2.0, 3.0, 3.0], levels
    assert {e.value for e in acc.Scalars("curriculum/math/success")} == {1.0}
    assert dm.state_dict()["curriculum"]["history"]["math"][-1][1] == 2  # the top rung, saved for resume
