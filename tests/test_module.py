"""The LightningModule end to end on the tiny model: it trains, logs the promised tags, and its GRPO step
gives exactly zero policy gradient when every completion gets the same reward."""

from __future__ import annotations

import glob

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data_modules.mixture import MixtureDataModule
from rlvr.algo.losses import PolicyLossConfig
from rlvr.domains.math.task import MathTask
from rlvr.module import RLVRModule
from rlvr.settings import DapoSettings, HybridSchedule, MultitaskBalance, TinyModelSettings

TINY = TinyModelSettings(vocab_size=600, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                         intermediate_size=128, corpus_size=300)  # fmt: skip


def fit(tmp_path, tasks, steps=4, val_every=None, callbacks=(), **module_kwargs):
    module = RLVRModule(tiny=TINY, completions_per_prompt=4, max_new_tokens=24, lr=1e-3,
                        log_samples_every_n_steps=1, **module_kwargs)  # fmt: skip
    dm = MixtureDataModule(tasks, prompts_per_step=4, val_prompts_per_task=8, val_batch_size=8)
    trainer = L.Trainer(
        max_steps=steps, val_check_interval=val_every or steps, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        logger=L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run"), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(module, dm)
    events = glob.glob(str(tmp_path / "run" / "**" / "events.out.tfevents*"), recursive=True)
    acc = EventAccumulator(events[0])
    acc.Reload()
    return module, acc


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))


def test_sft_then_grpo_trains_and_logs_every_promised_tag(tmp_path):
    math = MathTask(num_train=64, num_val=8)
    module, acc = fit(tmp_path, [math], steps=4, hybrid=HybridSchedule("step", 1.0, 0.0, 2),
                      loss=PolicyLossConfig(beta=0.04))  # fmt: skip
    tags = set(acc.Tags()["scalars"])
    required = {
        "train/loss", "train/pg_loss", "train/sft_loss", "train/kl", "train/entropy", "train/clip_frac/region",
        "reward/total", "rollout/completion_len", "rollout/truncated_frac", "timing_s/generate",
        "timing_s/score", "timing_s/update", "val/accuracy", "val/format_rate", "val/math/accuracy",
        "val/lenient_accuracy", "val/math/lenient_accuracy", "val/math/format_rate",
    }  # fmt: skip
    assert required <= tags, required - tags
    assert {f"reward/math/{c}" for c in math.components} <= tags
    assert [e.step for e in acc.Scalars("train/sft_loss")] == [0, 1]  # SFT stage only, no stale values
    assert [e.step for e in acc.Scalars("train/pg_loss")] == [2, 3]
    assert acc.Tags()["tensors"], "sample completions were not written as text"


def test_validation_points_give_the_curve_its_start_switch_and_end(tmp_path):
    from callbacks import ValidationPoints

    math = MathTask(num_train=64, num_val=8)
    _, acc = fit(tmp_path, [math], steps=5, val_every=5, callbacks=[ValidationPoints()],
                 hybrid=HybridSchedule("step", 1.0, 0.0, 3))  # fmt: skip
    # untrained (step 0), the SFT policy before its first RL step (3) and the end, nothing twice (Lightning
    # logs its own end-of-interval validation at global_step - 1: after 5 updates, at 4)
    assert [e.step for e in acc.Scalars("val/math/accuracy")] == [0, 3, 4]
    strict = [e.value for e in acc.Scalars("val/math/accuracy")]
    lenient = [e.value for e in acc.Scalars("val/math/lenient_accuracy")]
    assert all(s <= x for s, x in zip(strict, lenient)), (strict, lenient)


def test_validation_points_do_not_change_what_training_samples(tmp_path):
    from callbacks import ValidationPoints

    runs = []
    for k, cbs in enumerate(([], [ValidationPoints()])):
        _, acc = fit(tmp_path / str(k), [MathTask(num_train=64, num_val=8)], steps=3, val_every=3,
                     callbacks=cbs, hybrid=HybridSchedule("step", 1.0, 0.0, 1))  # fmt: skip
        runs.append([e.value for e in acc.Scalars("train/loss")])
    assert runs[0] == runs[1]


def test_parameters_change_and_sft_loss_falls(tmp_path):
    math = MathTask(num_train=16, num_val=8)
    module, acc = fit(tmp_path, [math], steps=6, hybrid=HybridSchedule("constant", 1.0, 1.0, 0))
    losses = [e.value for e in acc.Scalars("train/sft_loss")]
    assert losses[-1] < losses[0] - 0.5, losses


def test_dapo_family_options_run_and_log_stability_metrics(tmp_path):
    module, acc = fit(
        tmp_path, [MathTask(num_train=64, num_val=8)], steps=3,
        loss=PolicyLossConfig(loss_type="dapo", epsilon_high=0.28, beta=0.04, use_bias_correction_kl=True,
                              off_policy_mask_threshold=0.5, tis_cap=2.0, per_task_normaliser=True),
        dapo=DapoSettings(dynamic_sampling=True, overlong_buffer=8, mask_truncated_completions=True),
        scale_rewards="batch", multitask=MultitaskBalance(per_task_advantage_std=True), num_iterations=2,
        keep_sampling_mask=True, top_p=0.9, temperature=0.8,
    )  # fmt: skip
    tags = set(acc.Tags()["scalars"])
    assert {"train/math/kl", "train/math/entropy", "train/math/clip_frac", "train/math/is_ratio",
            "rollout/sampling_rounds", "train/off_policy/masked_frac"} <= tags  # fmt: skip
    assert all(torch.isfinite(torch.tensor(e.value)) for e in acc.Scalars("train/kl"))
    # zero-variance groups are counted on the batch as drawn, before dynamic sampling drops them
    frac = [e.value for e in acc.Scalars("rollout/frac_reward_zero_std")]
    dropped = [e.value for e in acc.Scalars("rollout/dynamic_sampling_dropped_groups")]
    assert all((f > 0) == (d > 0) and f * 4 <= d + 1e-6 for f, d in zip(frac, dropped)), (frac, dropped)
    # the keep mask makes the training log-probs those of the truncated sampler: the first update of each
    # rollout is on-policy, so its sampler/policy mismatch is ~0 (without the mask top-p would make it large)
    assert acc.Scalars("train/mismatch/abs_logp_diff_mean")[0].value < 1e-3


class ConstantTask(MathTask):
    """Every completion gets the same reward, whatever it says."""

    def score(self, completion, reference):
        return dict.fromkeys(self.components, 1.0)


def test_constant_reward_gives_exactly_zero_policy_gradient(tmp_path):
    task = ConstantTask(num_train=16, num_val=8)
    module = RLVRModule(tiny=TINY, completions_per_prompt=4, max_new_tokens=12)
    dm = MixtureDataModule([task], prompts_per_step=2)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, accelerator="cpu")
    module.trainer = trainer
    trainer.datamodule = dm  # what fit() wires up
    dm.setup()
    module.configure_model()
    exp = module.collect(dm.draw(2), {})
    assert torch.count_nonzero(exp.advantages) == 0
    module.policy.zero_grad(set_to_none=False)
    module.manual_backward = lambda loss: loss.backward()
    module.policy_backward(exp, torch.arange(len(exp.rollout.texts)), weight=1.0)
    grads = [p.grad for p in module.policy.parameters() if p.grad is not None]
    assert grads and all(torch.count_nonzero(g) == 0 for g in grads)


def test_non_finite_loss_skips_the_update_and_counts_it(tmp_path, monkeypatch):
    import rlvr.module as module_mod

    real = module_mod.policy_loss

    def poisoned(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        return loss * float("nan"), metrics

    monkeypatch.setattr(module_mod, "policy_loss", poisoned)
    math = MathTask(num_train=16, num_val=8)
    with pytest.warns(UserWarning, match="update skipped"):
        module, acc = fit(tmp_path, [math], steps=2)
    assert [e.value for e in acc.Scalars("train/skipped_steps")] == [1.0, 2.0]
    assert all(torch.isfinite(p).all() for p in module.policy.parameters())


def test_a_shortened_run_still_ends_with_validation(tmp_path):
    module, acc = fit(tmp_path, [MathTask(num_train=16, num_val=8)], steps=2, val_every=1000)
    # one validation, after the last step (Lightning logs epoch-level metrics at global_step - 1)
    assert [e.step for e in acc.Scalars("val/accuracy")] == [1]


class CountingEngine:
    """A user's engine (named by import path): wraps the HF engine and records every weight sync."""

    instances: list = []

    def __init__(self, policy, tokenizer, *, stop_token_ids=(), record_keep_mask=False, label="x"):
        from rlvr.rollout.hf import HFEngine

        self.inner = HFEngine(
            policy, tokenizer, stop_token_ids=stop_token_ids, record_keep_mask=record_keep_mask
        )
        self.label, self.generated, self.synced = label, 0, []
        CountingEngine.instances.append(self)

    def generate(self, prompts, n, params):
        self.generated += 1
        return self.inner.generate(prompts, n, params)

    def update_weights(self, policy):
        self.synced.append(sum(float(p.detach().sum()) for p in policy.parameters()))
        self.inner.update_weights(policy)


def test_engine_is_chosen_by_config_and_synced_after_every_optimizer_step(tmp_path):
    from rlvr.settings import RolloutSettings

    CountingEngine.instances.clear()
    module, _ = fit(tmp_path, [MathTask(num_train=32, num_val=4)], steps=3, hybrid=HybridSchedule("step", 1.0, 0.0, 2),
                    rollout=RolloutSettings(engine=f"{__name__}.CountingEngine", options={"label": "mine"}))  # fmt: skip
    (engine,) = CountingEngine.instances
    assert module.engine is engine and engine.label == "mine"
    assert engine.generated >= 2  # the RL step's rollout and the final validation
    assert len(engine.synced) == 1 + 3  # at train start (after any restore), then one per optimizer step...
    assert engine.synced[1] != engine.synced[2]  # ...each handing over the weights that step produced


def test_unknown_engine_is_one_line():
    from rlvr.rollout import engine_class

    with pytest.raises(ValueError, match="unknown rollout engine 'vlm'"):
        engine_class("vlm")


class SeenLR(L.Callback):
    def __init__(self):
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("rl_warmup", [0, 2])
def test_sft_lr_floor_decays_the_sft_stage_then_rl_runs_at_rl_lr(tmp_path, rl_warmup):
    import math as pymath

    seen = SeenLR()
    fit(tmp_path, [MathTask(num_train=64, num_val=4)], steps=6, callbacks=[seen],
        hybrid=HybridSchedule("step", 1.0, 0.0, 4, rl_lr=2e-4, sft_lr_floor=0.1, rl_warmup_steps=rl_warmup))  # fmt: skip
    cosine = [1e-3 * (0.1 + 0.9 * 0.5 * (1 + pymath.cos(pymath.pi * s / 4))) for s in range(4)]
    rl = [2e-4, 2e-4] if rl_warmup == 0 else [1e-4, 2e-4]  # the RL lr reached linearly after the switch
    assert seen.lrs == pytest.approx(cosine + rl)
    with pytest.raises(ValueError, match="sft_lr_floor must be in"):
        RLVRModule(tiny=TINY, hybrid=HybridSchedule("step", 1.0, 0.0, 4, sft_lr_floor=2.0))
    with pytest.raises(ValueError, match="rl_warmup_steps=-1: must be >= 0"):
        RLVRModule(tiny=TINY, hybrid=HybridSchedule("step", 1.0, 0.0, 4, rl_warmup_steps=-1))


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_a_run_without_an_sft_stage_runs_at_rl_lr_from_step_0(tmp_path, lam):
    """Pure GRPO (λ = 0) or a constant hybrid blend has no SFT stage and no switch: rl_lr, warmed up over
    rl_warmup_steps, is its learning rate from the first step, not lr (and no SFT cosine applies)."""
    seen = SeenLR()
    fit(tmp_path, [MathTask(num_train=64, num_val=4)], steps=4, callbacks=[seen],
        hybrid=HybridSchedule("constant", lam, lam, rl_lr=2e-5, sft_lr_floor=0.1, rl_warmup_steps=2))  # fmt: skip
    assert seen.lrs == pytest.approx([1e-5, 2e-5, 2e-5, 2e-5])


@pytest.mark.parametrize("reset", [True, False])
def test_rl_stage_starts_adamw_afresh_unless_told_not_to(tmp_path, reset):
    class Steps(L.Callback):  # AdamW's own step count of one weight, seen after each update
        def __init__(self):
            self.counts: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            opt = trainer.optimizers[0]
            self.counts.append(int(opt.state[opt.param_groups[0]["params"][0]]["step"]))

    seen = Steps()
    fit(tmp_path, [MathTask(num_train=64, num_val=4)], steps=6, callbacks=[seen],
        hybrid=HybridSchedule("step", 1.0, 0.0, 4, reset_optimizer=reset))  # fmt: skip
    # SFT's four steps, then the RL steps count from 1 again: SFT's second moments do not scale RL's updates
    assert seen.counts == ([1, 2, 3, 4, 1, 2] if reset else [1, 2, 3, 4, 5, 6])
