"""The research callbacks acting through ``fit`` on the tiny model: StabilityGuard rolls a diverging update back
and retries more gently (or stops), SampleLogger writes per-task samples with every reward component, and
KLMonitor's adaptive β follows the KL to its target and survives a checkpoint."""

from __future__ import annotations

import glob
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import KLMonitor, SampleLogger, StabilityGuard
from data_modules.mixture import MixtureDataModule
from rlvr.algo.losses import PolicyLossConfig
from rlvr.algo.schedules import adapt_kl_coef
from rlvr.domains.base import Example
from rlvr.domains.math.task import MathTask
from rlvr.module import RLVRModule
from rlvr.settings import HybridSchedule, TinyModelSettings

TINY = TinyModelSettings(vocab_size=600, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                         intermediate_size=128, corpus_size=300)  # fmt: skip
RL = HybridSchedule("constant", 0.0, 0.0, 0)
LR = 1e-3


def module(**kw) -> RLVRModule:
    kw = {"tiny": TINY, "completions_per_prompt": 4, "max_new_tokens": 16, "lr": LR, **kw}
    return RLVRModule(**kw)


def fit(tmp_path, m: RLVRModule, steps: int, callbacks=(), tasks=None):
    """(trainer, scalars {tag: [(step, value)]}, the event accumulator)."""
    tasks = tasks or [MathTask(num_train=64, num_val=4)]
    dm = MixtureDataModule(tasks, prompts_per_step=4, val_prompts_per_task=2, val_batch_size=4)
    trainer = L.Trainer(
        max_steps=steps, val_check_interval=1000, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        limit_val_batches=0, logger=L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run"),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        devices=1, callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(m, dm)
    acc = EventAccumulator(glob.glob(str(tmp_path / "run/**/events.out.tfevents*"), recursive=True)[0])
    acc.Reload()
    return trainer, {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}, acc


def patch_policy_loss(monkeypatch, edit):
    """Wrap the module's policy loss: ``edit(call_index, cfg, loss, metrics) -> (loss, metrics)``."""
    import rlvr.module as module_mod

    real, calls = module_mod.policy_loss, []

    def wrapped(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        calls.append(args[4].beta)  # the loss config this micro-batch trained with
        return edit(len(calls) - 1, loss, metrics)

    monkeypatch.setattr(module_mod, "policy_loss", wrapped)
    return calls


class WeightsAtStart(L.Callback):
    """The trainable weights as each training step starts."""

    def __init__(self):
        self.at: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.at[trainer.global_step] = [p.detach().clone() for p in pl_module.policy.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- StabilityGuard
def test_stability_guard_rolls_a_nan_step_back_lowers_the_lr_and_stops_after_max_retries(
    tmp_path, monkeypatch
):
    # two SFT steps train the weights, then every RL step's loss is NaN
    patch_policy_loss(monkeypatch, lambda i, loss, m: (loss * float("nan"), m))
    m = module(hybrid=HybridSchedule("step", 1.0, 0.0, 2), log_samples_every_n_steps=0)
    probe, guard = WeightsAtStart(), StabilityGuard(snapshot_every=1, max_retries=1, lr_factor=0.5)
    with pytest.warns(UserWarning) as caught:
        trainer, logged, _ = fit(tmp_path, m, steps=8, callbacks=[probe, guard])
    messages = [str(w.message) for w in caught if "StabilityGuard" in str(w.message)]
    assert len(messages) == 2 and "step 2: non-finite" in messages[0] and "retry 1/1" in messages[0], messages
    assert "retries used, stopping" in messages[1], messages
    assert trainer.global_step == 4  # stopped at the second trip, not at max_steps
    # the restore point is the state step 1 trained from (it passed); step 2's start (after step 1's update)
    # was not yet confirmed. Without the guard the weights would still be those of step 2 (NaN steps skip).
    assert not same(probe.at[1], probe.at[2])
    assert same(probe.at[3], probe.at[1])  # the retry started from the snapshot
    assert same(list(m.policy.parameters()), probe.at[1])
    opt = trainer.optimizers[0]
    assert {int(s["step"]) for s in opt.state.values()} == {1}  # optimizer state of the snapshot, too
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * LR)  # lowered once (the stopping trip keeps it)
    assert trainer.lr_scheduler_configs[0].scheduler.base_lrs == pytest.approx([0.5 * LR])
    assert logged["stability/trips"] == [(0, 0.0), (1, 0.0), (2, 1.0), (3, 2.0)]
    assert [v for _, v in logged["stability/lr_scale"]] == [1.0, 1.0, 0.5, 0.5]


def test_stability_guard_raises_beta_on_a_kl_spike(tmp_path, monkeypatch):
    def spike_at_3(i, loss, metrics):
        if i == 3:
            metrics = {**metrics, "kl": torch.tensor(50.0)}
        return loss, metrics

    used = patch_policy_loss(monkeypatch, spike_at_3)
    m = module(hybrid=RL, loss=PolicyLossConfig(beta=0.04), log_samples_every_n_steps=0)
    guard = StabilityGuard(action="beta", beta_factor=2.0, snapshot_every=1)
    with pytest.warns(UserWarning, match=r"step 3: KL spike 50 > 10.0 x median .*beta 0.08 \(retry 1/3\)"):
        trainer, logged, _ = fit(tmp_path, m, steps=5, callbacks=[guard])
    assert trainer.global_step == 5
    assert used == pytest.approx([0.04] * 4 + [0.08])  # the loss trained with the raised β after the trip
    assert m.loss_cfg.beta == pytest.approx(0.08)
    assert [v for _, v in logged["stability/beta"]] == pytest.approx([0.04, 0.04, 0.04, 0.08, 0.08])
    assert [v for _, v in logged["stability/trips"]] == [0, 0, 0, 1, 1]
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(LR)  # action=beta leaves the lr


def test_stability_guard_trip_rules():
    guard = StabilityGuard(max_kl=5.0, kl_spike_factor=10.0, min_kl=0.1, max_is_ratio=10.0)
    assert guard.trip_reason({"train/loss": 0.3, "train/kl": 0.5}, skipped=False) is None
    assert "skipped" in guard.trip_reason({}, skipped=True)
    assert "loss" in guard.trip_reason({"train/loss": float("inf")}, skipped=False)
    assert "KL" in guard.trip_reason({"train/kl": float("nan")}, skipped=False)
    assert "max_kl=5.0" in guard.trip_reason({"train/kl": 6.0}, skipped=False)
    assert "ratio" in guard.trip_reason({"train/is_ratio/max": 11.0}, skipped=False)
    assert "ratio" in guard.trip_reason({"train/is_ratio/max": float("nan")}, skipped=False)
    guard.kl_history.extend([0.001, 0.002, 0.003])  # median 0.002
    assert guard.trip_reason({"train/kl": 0.09}, skipped=False) is None  # 45x the median, under min_kl
    assert "spike" in guard.trip_reason({"train/kl": 0.2}, skipped=False)
    guard.kl_history.extend([0.05, 0.06, 0.07])  # a KL that grows steadily raises its median with it
    assert guard.trip_reason({"train/kl": 0.2}, skipped=False) is None


def test_stability_guard_state_round_trips_and_bad_settings_fail_early():
    guard = StabilityGuard(kl_window=3)
    guard.trips, guard.lr_scale, guard.good_steps = 2, 0.25, 7
    guard.kl_history.extend([0.1, 0.2, 0.3, 0.4])
    fresh = StabilityGuard(kl_window=3)
    fresh.load_state_dict(guard.state_dict())
    assert (fresh.trips, fresh.lr_scale, fresh.good_steps, list(fresh.kl_history)) == (
        2,
        0.25,
        7,
        [0.2, 0.3, 0.4],
    )
    with pytest.raises(ValueError, match="action"):
        StabilityGuard(action="pray")
    with pytest.raises(ValueError, match="lr_factor"):
        StabilityGuard(lr_factor=2.0)
    trainer = SimpleNamespace(strategy=None)
    with pytest.raises(ValueError, match="loss.beta > 0"):
        StabilityGuard(action="beta").on_fit_start(
            trainer, SimpleNamespace(loss_cfg=PolicyLossConfig(beta=0.0))
        )


# ---------------------------------------------------------------- SampleLogger
class EchoTask:
    """A second task with components of its own: math's are masked for it, and its are masked for math."""

    name, components, accuracy_component = "echo", ("echoed", "short"), "echoed"
    weights = {"echoed": 1.0, "short": 0.5}

    def examples(self, split: str) -> list[Example]:
        words = ["apple", "river", "stone", "cloud"] * 4
        return [Example("echo", [{"role": "user", "content": f"Say {w}."}], {"word": w}, f"{w}", f"echo/{i}")
                for i, w in enumerate(words)]  # fmt: skip

    def score(self, completion: str, reference) -> dict[str, float]:
        return {
            "echoed": float(reference["word"] in completion),
            "short": 1.0 - min(len(completion), 100) / 100,
        }


def test_sample_logger_writes_each_tasks_samples_with_every_component(tmp_path):
    # the module's own sample logging would write step 0 too (every 50 steps): the callback takes it over
    m = module(hybrid=RL, log_samples_every_n_steps=50)
    tasks = [MathTask(num_train=64, num_val=4), EchoTask()]
    _, _, acc = fit(tmp_path, m, steps=3, callbacks=[SampleLogger(every_n_steps=2, per_task=2)], tasks=tasks)
    tags = set(acc.Tags()["tensors"])
    assert {"samples/math/text_summary", "samples/echo/text_summary"} <= tags, tags
    names = list(MathTask.components) + list(EchoTask.components)
    for task, own, other in (("math", MathTask.components, EchoTask.components),
                             ("echo", EchoTask.components, MathTask.components)):  # fmt: skip
        events = acc.Tensors(f"samples/{task}/text_summary")
        assert [e.step for e in events] == [0, 2]  # every 2 steps, once each (not also by the module)
        text = events[0].tensor_proto.string_val[0].decode()
        assert text.count("**completion**") == 2  # per_task
        assert all(f"| {c} |" in text for c in names)  # every component, its own task's or not
        assert all(f"| {c} | n/a | |" in text for c in other)  # masked for this task
        assert not any(f"| {c} | n/a |" in text for c in own)
        rewards = [float(x.split("**")[0]) for x in text.split("**reward ")[1:]]
        assert rewards == sorted(rewards, reverse=True)  # best first


# ---------------------------------------------------------------- KLMonitor's adaptive β
def test_adapt_kl_coef_by_hand():
    assert adapt_kl_coef(1.0, kl=2.0, target=1.0, n_steps=1, horizon=10) == pytest.approx(
        1.02
    )  # clipped +0.2
    assert adapt_kl_coef(1.0, kl=0.5, target=1.0, n_steps=5, horizon=10) == pytest.approx(0.9)  # clipped -0.2
    assert adapt_kl_coef(2.0, kl=1.1, target=1.0, n_steps=10, horizon=10) == pytest.approx(2.2)


def test_adaptive_kl_moves_beta_through_fit_and_the_checkpoint_keeps_it(tmp_path, monkeypatch):
    used = patch_policy_loss(monkeypatch, lambda i, loss, m: (loss, m))
    # λ = 0.5: the SFT half moves the policy away from the reference, so KL > 0 from the second step on; the
    # first step's KL is 0 (the policy is the reference). A tiny target has the KL below it, then above it.
    target, hybrid = 1e-9, HybridSchedule("constant", 0.5, 0.5, 0)
    m = module(hybrid=hybrid, loss=PolicyLossConfig(beta=0.04), log_samples_every_n_steps=0)
    trainer, logged, _ = fit(tmp_path, m, steps=3, callbacks=[KLMonitor(target_kl=target, horizon=2)])
    kls = [v for _, v in logged["train/kl"]]
    assert kls[0] < target < min(kls[1:]), kls
    expected = [0.04]
    for kl in kls:  # Ziegler et al.: β · (1 + clip(kl / target - 1, ±0.2) · n / horizon), n = 1 step
        expected.append(expected[-1] * (1 + max(-0.2, min(0.2, kl / target - 1)) / 2))
    assert expected == pytest.approx([0.04, 0.036, 0.0396, 0.04356])  # down 10%, then up 10% a step
    betas = [v for _, v in logged["train/beta"]]
    assert betas == pytest.approx(expected[:-1]) and used == pytest.approx(
        betas
    )  # logged = what the loss used
    assert m.loss_cfg.beta == pytest.approx(expected[-1])
    path = tmp_path / "c.ckpt"
    trainer.save_checkpoint(path)
    resumed = module(hybrid=hybrid, loss=PolicyLossConfig(beta=0.04))
    resumed.on_load_checkpoint(torch.load(path, weights_only=True))
    assert resumed.loss_cfg.beta == pytest.approx(expected[-1])  # a resumed run continues with the adapted β


def test_adaptive_kl_needs_a_beta_to_adapt():
    with pytest.raises(ValueError, match="loss.beta > 0"):
        KLMonitor(target_kl=0.1).on_fit_start(None, SimpleNamespace(loss_cfg=PolicyLossConfig(beta=0.0)))
    with pytest.raises(ValueError, match="target_kl"):
        KLMonitor(target_kl=0.0)
