"""The LightningModule: one GRPO / hybrid SFT+GRPO step, read top to bottom as the algorithm.

    experience = collect(prompts)        # rollout (G per prompt) -> verifiers -> group advantages
    for each of num_iterations × steps_per_generation mini-batches:
        loss = λ·L_SFT(gold solutions) + (1-λ)·L_GRPO(mini-batch)   -> one optimizer step

Each stage is a function in its own module (rollout/, rewards.py, algo/, experience.py, sequences.py); this
file orchestrates them, and train_logging.py writes what happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from rlvr.algo.advantages import group_advantages, overlong_penalty
from rlvr.algo.losses import PolicyLossConfig, batch_totals, policy_loss, sft_loss
from rlvr.algo.schedules import SFT_SCHEDULES, adapt_entropy_coef
from rlvr.distributed import (
    any_rank,
    gather_tensors,
    max_int,
    mean_metrics,
    rank_world,
    sum_gradients,
    sum_totals,
)
from rlvr.domains.base import Example
from rlvr.experience import (
    Experience,
    concat_rewards,
    concat_rollouts,
    sample_batch,
    split_evenly,
    task_index,
)
from rlvr.models import TINY, adamw_with_warmup, build_policy
from rlvr.resume import all_rng_states, as_settings, own_rng_state, plain, set_rng_state
from rlvr.rewards import RewardBatch, add_component, score_async
from rlvr.rollout import build_engine, engine_class
from rlvr.rollout.base import Rollout, SamplingParams
from rlvr.sequences import (
    completion_entropies,
    completion_logprobs,
    encode_prompts,
    reference_logprobs,
    rollout_logprobs,
    sft_micro_batches,
)
from rlvr.settings import (
    DapoSettings,
    EntropyControl,
    HybridSchedule,
    LoraSettings,
    MultitaskBalance,
    RolloutSettings,
    TinyModelSettings,
)
from rlvr.stages import StageControl
from rlvr.train_logging import StepLogger, reduce_metrics


class RLVRModule(L.LightningModule):
    """GRPO and hybrid SFT+GRPO on verifiable-reward tasks.

    Args:
        name_or_path: hub id, local checkpoint directory, or ``tiny`` (built from a config, offline).
        tiny: settings of the tiny model (used only when ``name_or_path`` is ``tiny``).
        dtype: parameter dtype (float32 | bfloat16 | float16).
        load_in_4bit / load_in_8bit: load the base model in 4-bit NF4 (QLoRA) or 8-bit (both need LoRA).
        lora: LoRA adapters; with LoRA the reference policy is the base with adapters disabled.
        completions_per_prompt: G, completions sampled per prompt (the group size).
        micro_batch_size: completions per forward/backward; the gradient of a mini-batch is accumulated
            over its micro-batches (exact: every loss is normalised by whole-batch totals).
        num_iterations: μ, passes over each rollout (μ > 1 stores old log-probs from a no-grad forward).
        steps_per_generation: optimizer steps per rollout pass; the rollout is split into this many
            mini-batches by prompt. Each optimizer step counts toward ``trainer.max_steps``.
        max_new_tokens: generation budget per completion.
        max_prompt_tokens: longer prompts are cut from the left.
        temperature: sampling temperature (training log-probs use the same).
        top_p: nucleus sampling.
        top_k: top-k sampling (0 = off).
        keep_sampling_mask: DeepSeek-V3.2: record the sampler's top-p/top-k truncation and apply it to the
            training log-probs too, so the ratio compares the same action space.
        rollout: the rollout engine (``hf`` or your own class) and its options.
        rollout_chunks: generate the batch in this many chunks of prompts; chunk k is scored (in threads and
            the sandbox pool) while chunk k+1 is generated. 0 (auto): 2 chunks when a prompt's task scores in
            batches (``judge_batch``: the sandboxed code task), else 1 (a smaller decode batch costs more per
            token than fast scoring saves). Decided from the tasks, never from timings, so sampling stays
            reproducible.
        loss: the policy-loss family and its options (TRL names).
        scale_rewards: advantage scaling: group | batch | none (TRL).
        multitask: per-task advantage std and per-task loss weights.
        dapo: dynamic sampling, soft overlong punishment, masking truncated completions.
        entropy_control: adaptive entropy coefficient.
        hybrid: λ schedule of the SFT term.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up.
        max_grad_norm: gradient clipping (0 = off).
        val_max_new_tokens: generation budget in validation (greedy); defaults to ``max_new_tokens``.
        log_samples_every_n_steps: write sample completions to TensorBoard every N steps (0 = never).
        truncation_warn_frac: warn when more than this fraction of completions hit ``max_new_tokens``.
        scoring_threads: threads that run verifiers while generation proceeds.
    """

    # fmt: off
    def __init__(
        self,
        name_or_path: str = TINY,
        tiny: TinyModelSettings = TinyModelSettings(),  # noqa: B008
        dtype: str = "float32",
        load_in_4bit: bool = False,
        load_in_8bit: bool = False,
        lora: LoraSettings = LoraSettings(),  # noqa: B008
        completions_per_prompt: int = 8,
        micro_batch_size: int = 64,
        num_iterations: int = 1,
        steps_per_generation: int = 1,
        max_new_tokens: int = 128,
        max_prompt_tokens: int = 1024,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        keep_sampling_mask: bool = False,
        rollout: RolloutSettings = RolloutSettings(),  # noqa: B008
        rollout_chunks: int = 0,
        loss: PolicyLossConfig = PolicyLossConfig(),  # noqa: B008
        scale_rewards: str = "group",
        multitask: MultitaskBalance = MultitaskBalance(),  # noqa: B008
        dapo: DapoSettings = DapoSettings(),  # noqa: B008
        entropy_control: EntropyControl = EntropyControl(),  # noqa: B008
        hybrid: HybridSchedule = HybridSchedule(),  # noqa: B008
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        max_grad_norm: float = 1.0,
        val_max_new_tokens: int | None = None,
        log_samples_every_n_steps: int = 50,
        truncation_warn_frac: float = 0.5,
        scoring_threads: int = 4,
    ):
        super().__init__()
        # a checkpoint stores the settings as plain dicts (loadable with weights_only=True): accept both
        tiny, lora, rollout = as_settings(TinyModelSettings, tiny), as_settings(LoraSettings, lora), as_settings(RolloutSettings, rollout)  # fmt: skip
        loss, multitask, dapo = as_settings(PolicyLossConfig, loss), as_settings(MultitaskBalance, multitask), as_settings(DapoSettings, dapo)  # fmt: skip
        entropy_control, hybrid = as_settings(EntropyControl, entropy_control), as_settings(HybridSchedule, hybrid)
        _check(completions_per_prompt >= 1, "completions_per_prompt must be >= 1")
        _check(completions_per_prompt >= 2 or _pure_sft(hybrid),
               "completions_per_prompt=1: a group-relative advantage (reward - mean of its group) is 0 for every "
               "completion, so the policy gradient would be zero; use completions_per_prompt >= 2")
        _check(min(micro_batch_size, num_iterations, steps_per_generation) >= 1 and rollout_chunks >= 0,
               "micro_batch_size, num_iterations and steps_per_generation must be >= 1, rollout_chunks >= 0")
        _check(scale_rewards in ("group", "batch", "none"), f"scale_rewards={scale_rewards!r}: use group|batch|none")
        _check(not (load_in_4bit and load_in_8bit), "load_in_4bit and load_in_8bit are both set: choose one")
        _check(not (load_in_4bit or load_in_8bit) or lora.r > 0, "a 4/8-bit base needs LoRA: set lora.r > 0 (QLoRA)")
        _check(hybrid.schedule in SFT_SCHEDULES,
               f"hybrid.schedule={hybrid.schedule!r}: choose one of {sorted(SFT_SCHEDULES)}")
        _check(not multitask.per_task_advantage_std or scale_rewards == "batch",
               "multitask.per_task_advantage_std needs scale_rewards=batch")
        for name in ("switch_fraction", "sft_lr_floor"):
            _check(getattr(hybrid, name) is None or 0.0 <= getattr(hybrid, name) <= 1.0, f"hybrid.{name} must be in [0, 1]")  # fmt: skip
        _check(dapo.overlong_buffer <= max_new_tokens, "dapo.overlong_buffer must be <= max_new_tokens")
        engine_class(rollout.engine)  # an unknown engine fails here, before any model is built
        if loss.loss_type == "dr_grpo" and loss.max_completion_length is None:
            loss = dataclasses.replace(loss, max_completion_length=max_new_tokens)
        self.save_hyperparameters()
        self.automatic_optimization = False  # several optimizer steps per rollout, guarded steps
        self.name_or_path, self.tiny, self.dtype_name = name_or_path, tiny, dtype
        self.load_in_4bit, self.load_in_8bit = load_in_4bit, load_in_8bit
        self.lora, self.loss_cfg, self.hybrid, self.rollout = lora, loss, hybrid, rollout
        self.multitask, self.dapo, self.entropy_control = multitask, dapo, entropy_control
        self.G, self.micro_batch_size = completions_per_prompt, micro_batch_size
        self.num_iterations, self.steps_per_generation = num_iterations, steps_per_generation
        self.sampling = SamplingParams(max_new_tokens, temperature, top_p, top_k)
        self.val_sampling = SamplingParams(val_max_new_tokens or max_new_tokens, 0.0)
        self.keep_sampling_mask, self.rollout_chunks = keep_sampling_mask, rollout_chunks
        self.max_prompt_tokens, self.scale_rewards = max_prompt_tokens, scale_rewards
        self.lr, self.weight_decay, self.warmup_steps, self.max_grad_norm = lr, weight_decay, warmup_steps, max_grad_norm
        self.scoring = ThreadPoolExecutor(max_workers=scoring_threads, thread_name_prefix="rlvr-score")
        self.step_log = StepLogger(self, log_samples_every_n_steps, truncation_warn_frac)
        self.policy = self.ref_policy = self.tokenizer = self.engine = None
        self.tasks: dict = {}
        self.stages = StageControl(hybrid)
        self.last_entropy = float("inf")  # the entropy controller's measurement of the last step (TRL's gate)
        self._pending_rng: dict | None = None  # RNG states of a checkpoint, applied when its next step starts
        self.sync = "none"  # how gradients meet across ranks (set at train start, see _gradient_sync)
        self._skip, self._grad_norm = False, torch.tensor(0.0)
    # fmt: on

    # ---------------------------------------------------------------- setup
    def configure_model(self) -> None:
        if self.policy is not None:
            return
        dm = self.trainer.datamodule
        self.tasks = dict(dm.tasks)
        corpus = dm.tokenizer_corpus(self.tiny.corpus_size) if self.name_or_path == TINY else None
        self.tokenizer, model, self.ref_policy = build_policy(
            self.name_or_path, self.tiny, corpus, dtype=self.dtype_name, load_in_4bit=self.load_in_4bit,
            lora=self.lora, frozen_reference=self.loss_cfg.beta > 0, load_in_8bit=self.load_in_8bit,
        )  # fmt: skip
        self.policy = model.eval()  # dropout-free log-probs everywhere; only SFT steps switch to train mode
        self.engine = build_engine(
            self.rollout.engine, model, self.tokenizer, stop_token_ids=[self.tokenizer.pad_token_id],
            record_keep_mask=self.keep_sampling_mask, options=self.rollout.options,
        )  # fmt: skip
        self.step_log.setup_metrics(self.tasks)

    def train(self, mode: bool = True):
        """Lightning puts the module in train mode for fit; the policy and reference stay in eval mode, so the
        sampling, π_old, π_ref and π_θ passes see the same network (no dropout masks between them)."""
        super().train(mode)
        for net in (self.policy, self.ref_policy):
            if net is not None:
                net.eval()
        return self

    def configure_optimizers(self):
        lr, warmup, decay = self.stages.lr_plan(self.lr, self.warmup_steps, self.trainer.max_steps)
        opt, sched = adamw_with_warmup(self.policy, lr, self.weight_decay, warmup, **decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_start(self) -> None:
        max_steps = self.trainer.max_steps
        _check(max_steps is not None and max_steps > 0,
               f"trainer.max_steps={max_steps}: the training stream is endless, so set trainer.max_steps > 0")  # fmt: skip
        if self.stages.override is None and not _pure_sft(self.hybrid):
            if all(self.stages.weight(s, max_steps) >= 1.0 for s in range(max_steps)):
                rank_zero_warn(
                    f"the hybrid schedule keeps λ=1 (pure SFT) for all {max_steps} steps, so the RL options "
                    "never act: raise trainer.max_steps past hybrid.switch_step or set hybrid.switch_fraction"
                )
        if self.precision_is_pure_low() and self.lora.r == 0:
            rank_zero_warn(
                f"dtype={self.dtype_name} trains {self.dtype_name} weights directly: updates smaller than the "
                "weight's rounding step are lost; use dtype=float32 with trainer.precision=bf16-mixed"
            )

    def precision_is_pure_low(self) -> bool:
        return self.dtype_name in ("bfloat16", "float16") and not (self.load_in_4bit or self.load_in_8bit)

    def on_train_start(self) -> None:
        # gradients summed over ranks once per step (sum_gradients): DDP's per-micro-batch all-reduce can hang
        self.sync = _gradient_sync(self.trainer.strategy)
        self.engine.update_weights(self.policy)  # the weights of a restored checkpoint, not the files'
        _check(self.sync != "strategy" or not self.dapo.dynamic_sampling,
               "dapo.dynamic_sampling with a sharded strategy (FSDP / DeepSpeed): ranks would generate in "
               "different refill rounds; use strategy=ddp or set dapo.dynamic_sampling=false")  # fmt: skip
        if self.sync == "strategy":
            rank_zero_warn(
                "sharded strategy (FSDP / DeepSpeed): only instantiation is tested in rlvr; the HF "
                "engine's decode loop does not pair its forwards across ranks, so completions of "
                "different lengths can stall a rank; strategy=ddp is the tested multi-process path"
            )

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a list of Examples (text + references); tensors are made on the device later

    # ---------------------------------------------------------------- the step
    def training_step(self, batch: list[Example], batch_idx: int) -> None:
        if self.sync == "manual":  # no reducer in backward (Lightning re-enables it after every step)
            self.trainer.strategy.model.require_backward_grad_sync = False
        if self._pending_rng is not None:  # a resumed run: sample exactly as the interrupted run would have
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        lam = self.stages.weight(self.global_step, self.trainer.max_steps)
        if self.stages.enters_rl(lam):
            self.start_rl_stage()
        if lam >= 1.0:  # SFT stage: no generation at all
            metrics = {"train/sft_loss": self.sft_backward(batch, weight=1.0)}
            self.optimizer_step_guarded(metrics, lam)
            return
        metrics: dict[str, float] = {}
        exp = self.collect(batch, metrics)
        for _ in range(self.num_iterations):
            for rows in exp.minibatches(self.steps_per_generation):
                if self.global_step >= self.trainer.max_steps:  # μ > 1 or several steps per rollout
                    return
                step_metrics = dict(metrics)
                prompts = sorted(set(exp.prompt_index[rows].tolist()))
                if lam > 0:  # the hybrid term on the gold solutions of this mini-batch's prompts
                    step_metrics["train/sft_loss"] = self.sft_backward([exp.examples[i] for i in prompts], lam)  # fmt: skip
                t = time.perf_counter()
                step_metrics.update(self.policy_backward(exp, rows, weight=1.0 - lam))
                step_metrics["timing_s/update"] = time.perf_counter() - t
                # this rank's weight in the metrics' mean over ranks (distributed.mean_metrics)
                step_metrics["_tokens"], step_metrics["_rows"] = (
                    float(exp.loss_mask[rows].sum()),
                    float(len(rows)),
                )
                self.optimizer_step_guarded(step_metrics, lam)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # should_stop at max_steps makes Lightning validate before it stops: every run ends with val/* metrics
        if 0 < (self.trainer.max_steps or 0) <= self.global_step:
            self.trainer.should_stop = True

    def start_rl_stage(self) -> None:
        """SFT -> RL: the KL anchored to the SFT'd policy, fresh optimizer moments, the RL learning rate."""
        if self.hybrid.refresh_reference and self.ref_policy is not None:
            self.ref_policy.load_state_dict(self.policy.state_dict())
        opt, sched = self.optimizers(), self.lr_schedulers()
        if self.hybrid.reset_optimizer:  # AdamW re-creates moments and step counts at its next step
            opt.optimizer.state.clear()
        if self.hybrid.rl_lr is not None:
            for group, factor in zip(opt.param_groups, sched.lr_lambdas):  # hybrid.rl_warmup_steps ramps it
                group["lr"] = self.hybrid.rl_lr * factor(sched.last_epoch)
            sched.base_lrs = [self.hybrid.rl_lr] * len(opt.param_groups)
        rank_zero_info(f"step {self.global_step}: SFT stage over, RL from here (lr={self.hybrid.rl_lr or self.lr})")  # fmt: skip

    def override_sft_weight(self, lam: float | None) -> None:
        """Force λ from the next step on (a stage controller such as ``callbacks.StageSwitch``: 1 = SFT,
        0 = RL); ``None`` hands λ back to the ``hybrid`` schedule."""
        _check(lam is None or 0.0 <= lam <= 1.0, f"sft weight {lam} must be in [0, 1]")
        self.stages.override = lam

    def collect(self, batch: list[Example], metrics: dict) -> Experience:
        """Rollout -> verifiers -> advantages, with DAPO dynamic sampling when enabled."""
        metrics.update({"timing_s/generate": 0.0, "timing_s/score": 0.0})
        examples, rollout, rb = sample_batch(
            batch, lambda prompts: self.rollout_and_score(prompts, metrics), self._draw,
            group_size=self.G, dynamic_sampling=self.dapo.dynamic_sampling,
            max_rounds=self.dapo.max_sampling_rounds, pad_id=self.tokenizer.pad_token_id, metrics=metrics,
            agree=max_int,
        )  # fmt: skip
        names = sorted(self.tasks)
        task_ids = task_index(rb.tasks, names)
        adv = self.advantages(rb.total, rollout.group_ids, task_ids)
        loss_mask = rollout.completion_mask.clone()
        if self.dapo.mask_truncated_completions:
            loss_mask[rollout.truncated] = 0.0
        exp = Experience(examples, rollout, rb, adv, loss_mask, task_ids, names, rollout.group_ids.clone())
        if self.num_iterations > 1 or self.steps_per_generation > 1:
            exp.old_logp = rollout_logprobs(self.policy, exp, self.micro_batch_size, self.device, self.sampling.temperature)  # fmt: skip
        self.step_log.rollout(examples, rollout, rb, metrics)
        return exp

    def advantages(
        self, rewards: torch.Tensor, group_ids: torch.Tensor, task_ids: torch.Tensor
    ) -> torch.Tensor:
        """Group advantages. Groups never span ranks (each rank samples all G completions of its prompts);
        with ``scale_rewards=batch`` the std is that of every rank's rewards, as in one process."""
        kw = {"scale_rewards": self.scale_rewards, "per_task_std": self.multitask.per_task_advantage_std}
        if self.scale_rewards != "batch" or rank_world()[1] == 1:
            return group_advantages(rewards, group_ids, task_ids=task_ids, **kw)
        rank = rank_world()[0]
        parts = gather_tensors(torch.stack([rewards.double(), group_ids.double(), task_ids.double()]))
        offset = [0] + [int(p[1].max()) + 1 if p.shape[1] else 0 for p in parts]
        groups = torch.cat([p[1].long() + sum(offset[: r + 1]) for r, p in enumerate(parts)])
        adv = group_advantages(torch.cat([p[0] for p in parts]).to(rewards.dtype), groups,
                               task_ids=torch.cat([p[2].long() for p in parts]), **kw)  # fmt: skip
        start = sum(p.shape[1] for p in parts[:rank])
        return adv[start : start + len(rewards)]

    def _draw(self, n: int) -> list[Example]:
        """``n`` fresh prompts for DAPO's refills, from the data module's ``draw`` (only needed when refilling)."""
        draw = getattr(self.trainer.datamodule, "draw", None)
        _check(
            draw is not None,
            "dapo.dynamic_sampling needs a data module with draw(n) (MixtureDataModule has it)",
        )
        return draw(n)

    def rollout_and_score(self, examples: list[Example], metrics: dict) -> tuple[Rollout, RewardBatch]:
        """Generate G completions per prompt in chunks; each chunk's scoring starts as soon as it exists, so
        verifiers run while the next chunk is generated. DAPO's overlong penalty joins as a reward component."""
        parts, waits = [], []
        t0 = time.perf_counter()
        slow = any(hasattr(self.tasks[ex.task], "judge_batch") for ex in examples)
        chunks = self.rollout_chunks or (2 if slow else 1)
        for chunk in split_evenly(examples, chunks):
            prompts = encode_prompts(self.tokenizer, chunk, self.max_prompt_tokens)
            with _decode_precision(self.device):
                r = self.engine.generate(prompts, self.G, self.sampling)
            refs = [ex for ex in chunk for _ in range(self.G)]
            waits.append(score_async(self.scoring, self.tasks, [e.task for e in refs], r.texts,
                                     [e.reference for e in refs]))  # fmt: skip
            parts.append(r)
        t1 = time.perf_counter()
        rollout = concat_rollouts(parts, self.tokenizer.pad_token_id) if len(parts) > 1 else parts[0]
        rollout.group_ids = rollout.group_ids.cpu()
        rb = concat_rewards([w() for w in waits])
        if self.dapo.overlong_buffer > 0:
            pen = overlong_penalty(rollout.lengths.cpu(), self.sampling.max_new_tokens, self.dapo.overlong_buffer)  # fmt: skip
            rb = add_component(rb, "overlong", pen, self.dapo.overlong_penalty_factor)
        metrics["timing_s/generate"] += t1 - t0
        metrics["timing_s/score"] += time.perf_counter() - t1
        observe = getattr(getattr(self._trainer, "datamodule", None), "observe_rewards", None)  # a curriculum
        if observe is not None:  # every sampled round, before dynamic sampling drops the solved groups
            metrics.update(observe([ex for ex in examples for _ in range(self.G)], rb.correct.tolist()))
        return rollout, rb

    def _calls(self, count: int) -> int:
        """Forward/backward calls this rank makes for ``count`` micro-batches: under a strategy that syncs in
        backward (FSDP, DeepSpeed) every rank makes as many as the busiest, padding with zero-weight calls."""
        return max_int(count) if self.sync == "strategy" else count

    def sft_backward(self, batch: list[Example], weight: float) -> float:
        """Token-level cross-entropy on the gold solutions, backward scaled by ``weight``; returns the loss
        (normalised by the target tokens of every rank's batch, so the summed gradients are one batch's)."""
        micro, local_tokens = sft_micro_batches(self.tokenizer, batch, self.max_prompt_tokens,
                                                self.sampling.max_new_tokens, self.micro_batch_size)  # fmt: skip
        total_tokens = sum_totals({"tokens": local_tokens})["tokens"]
        value = 0.0
        with _train_mode(self.policy):  # the only pass with dropout (lora.dropout acts here)
            for i in range(self._calls(len(micro))):
                pad = i >= len(micro)
                p_ids, p_mask, c_ids, c_mask = (x.to(self.device) for x in micro[-1 if pad else i])
                logp, _ = completion_logprobs(self.policy, p_ids, p_mask, c_ids, c_mask)
                loss = sft_loss(logp, c_mask, total_tokens=total_tokens) * self._grad_scale()
                self.manual_backward((0.0 if pad else weight) * loss)
                value += 0.0 if pad else loss.item() / self._grad_scale()
        return value

    def policy_backward(self, exp: Experience, rows: torch.Tensor, weight: float) -> dict[str, float]:
        """GRPO-family loss over the mini-batch ``rows`` in micro-batches, backward scaled by ``weight``.
        Normalisers are whole-batch totals over every rank; with ``top_entropy_quantile`` < 1 the entropy
        cut-off is that of the whole mini-batch (one extra no-grad pass), so micro-batching stays exact."""
        cfg, temp = self.loss_cfg, self.sampling.temperature
        totals = sum_totals(batch_totals(exp.loss_mask[rows], exp.task_ids[rows], len(exp.task_names)))
        task_w = torch.tensor([(self.multitask.task_loss_weights or {}).get(n, 1.0) for n in exp.task_names])
        cutoff = self.entropy_cutoff(exp, rows) if cfg.top_entropy_quantile < 1.0 else None
        cfg = dataclasses.replace(cfg, entropy_coef=self.applied_entropy_coef())
        micro = list(rows.split(self.micro_batch_size))
        parts: list[tuple[torch.Tensor, dict]] = []
        for i in range(self._calls(len(micro))):
            pad = i >= len(micro)
            rows_mb = micro[-1][:1] if pad else micro[i]
            mb = exp.micro_batch(rows_mb, self.device)
            logp, entropy = completion_logprobs(self.policy, *mb.sequences, temp, with_entropy=True,
                                                keep_count=mb.keep_count)  # fmt: skip
            if pad:
                self.manual_backward(0.0 * logp.sum())
                continue
            ref_logp = reference_logprobs(self.policy, self.ref_policy, mb, temp) if cfg.beta > 0 else None
            old = mb.old_logp if mb.old_logp is not None else logp.detach()
            loss, m = policy_loss(
                logp, old, mb.advantages, mb.loss_mask, cfg, ref_logp=ref_logp, entropy=entropy,
                sampler_logp=mb.sampler_logp, task_ids=mb.task_ids, task_weights=task_w,
                entropy_cutoff=cutoff, **totals,
            )  # fmt: skip
            if not torch.isfinite(loss):
                self.step_log.nonfinite_loss = True  # the whole update is skipped, on every rank
                if self.sync == "strategy":  # its backward is a collective: keep the pairing
                    self.manual_backward(0.0 * logp.sum())
                continue
            self.manual_backward(weight * self._grad_scale() * loss)
            parts.append((rows_mb, {**m, "pg_loss": loss.detach()}))
        return reduce_metrics(parts, exp)

    @torch.no_grad()
    def entropy_cutoff(self, exp: Experience, rows: torch.Tensor) -> float:
        """The (1 − ρ) quantile of the per-token entropies of the whole mini-batch, over every rank."""
        values = []
        for rows_mb in rows.split(self.micro_batch_size):
            mb = exp.micro_batch(rows_mb, self.device)
            ent = completion_entropies(
                self.policy, *mb.sequences, self.sampling.temperature, keep_count=mb.keep_count
            )
            values.append(ent[mb.loss_mask > 0].float().cpu())
        local = torch.cat(values) if values else torch.zeros(0)
        every = torch.cat(gather_tensors(local)) if rank_world()[1] > 1 else local
        if every.numel() == 0:
            return float("inf")
        return float(torch.quantile(every, 1.0 - self.loss_cfg.top_entropy_quantile))

    def _grad_scale(self) -> float:
        """Strategies that average gradients over ranks get the loss times the world size, so the average
        equals the sum that the whole-batch normalisers assume."""
        return float(rank_world()[1]) if self.sync == "strategy" else 1.0

    def optimizer_step_guarded(self, metrics: dict, lam: float) -> None:
        """Sum gradients over ranks, then one optimizer step: clipped after the precision plugin unscales
        (``on_before_optimizer_step``), skipped on every rank when any rank saw a non-finite loss or the
        gradient is non-finite. A skipped step still counts (global step, LR schedule), changes no weight."""
        opt = self.optimizers()
        step = self.global_step  # logged against the step this update belongs to (stepping increments it)
        self._skip = any_rank(self.step_log.nonfinite_loss)
        self.step_log.nonfinite_loss = False
        if self.sync == "manual":
            sum_gradients(self.policy.parameters())
        self._grad_norm = torch.tensor(0.0)
        opt.step()  # -> on_before_optimizer_step (clip / skip) -> the optimizer
        opt.zero_grad(set_to_none=True)
        self.lr_schedulers().step()
        if self._skip:
            self.step_log.skipped += 1
            rank_zero_warn(f"step {step}: non-finite loss or gradient, update skipped")
        else:
            self.engine.update_weights(self.policy)  # the next rollout samples from the new weights
        metrics.update({"train/grad_norm": float(self._grad_norm), "train/skipped_steps": float(self.step_log.skipped),
                        "train/sft_weight": lam, "train/entropy_coef": self.applied_entropy_coef()})  # fmt: skip
        metrics["train/loss"] = lam * metrics.get("train/sft_loss", 0.0) + (1 - lam) * metrics.get("train/pg_loss", 0.0)  # fmt: skip
        metrics = mean_metrics(metrics)
        if lam < 1.0:
            self.adapt_entropy_coef(metrics)
        self.step_log.scalars(metrics, step)

    def on_before_optimizer_step(self, optimizer) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.tensor(0.0)
        self._grad_norm = norm.detach().cpu()
        if not torch.isfinite(norm):
            self._skip = True
        if self._skip:  # no gradient, no update (AdamW leaves parameters without one untouched)
            optimizer.zero_grad(set_to_none=True)

    def applied_entropy_coef(self) -> float:
        """γ used by this step: the controller's γ while the last measured entropy is at or below the target
        (TRL's gating), else 0; the configured ``loss.entropy_coef`` when the controller is off."""
        ec, coef = self.entropy_control, self.loss_cfg.entropy_coef
        return coef if ec.target is None or self.last_entropy <= ec.target else 0.0

    def adapt_entropy_coef(self, metrics: dict) -> None:
        """After each optimizer step: γ ± ``entropy_control.lr`` (up when the step's entropy, over every
        rank's tokens, is at or below the target), clamped to [0, max_coef] (TRL's use_adaptive_entropy)."""
        ec = self.entropy_control
        if ec.target is None or "train/entropy" not in metrics:
            return
        self.last_entropy = metrics["train/entropy"]
        coef = adapt_entropy_coef(self.loss_cfg.entropy_coef, self.last_entropy, ec.target, ec.lr, 0.0, ec.max_coef)  # fmt: skip
        self.loss_cfg = dataclasses.replace(self.loss_cfg, entropy_coef=coef)

    # ---------------------------------------------------------------- validation
    def validation_step(self, batch: list[Example], batch_idx: int) -> None:
        prompts = encode_prompts(self.tokenizer, batch, self.max_prompt_tokens)
        with _decode_precision(self.device):
            rollout = self.engine.generate(prompts, 1, self.val_sampling)
        refs = [ex.reference for ex in batch]
        rewards = score_async(self.scoring, self.tasks, [ex.task for ex in batch], rollout.texts, refs)()
        self.step_log.validation(batch, rewards)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Everything a resumed run needs to continue exactly (Lightning adds weights, optimizer, scheduler,
        loops, callbacks and the data position); plain data only, so it loads with ``weights_only=True``."""
        checkpoint["hyper_parameters"] = plain(dict(checkpoint.get("hyper_parameters", {})))
        checkpoint["rlvr"] = {
            "entropy_coef": self.loss_cfg.entropy_coef,  # the adaptive controller's γ and its gate
            "beta": self.loss_cfg.beta,  # β as KLMonitor's controller / StabilityGuard left it
            "last_entropy": self.last_entropy,
            "stages": self.stages.state_dict(),
            "skipped_steps": self.step_log.skipped,
            "rng": all_rng_states(),  # every rank's (a collective: every rank dumps the checkpoint)
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("rlvr", {})
        if "entropy_coef" in state:
            self.loss_cfg = dataclasses.replace(self.loss_cfg, entropy_coef=state["entropy_coef"], beta=state.get("beta", self.loss_cfg.beta))  # fmt: skip
        self.last_entropy = state.get("last_entropy", float("inf"))
        self.stages.load_state_dict(state.get("stages", {}))
        self.step_log.skipped = state.get("skipped_steps", 0)
        # applied when the next training step starts: building the data loader draws from the torch RNG
        self._pending_rng = own_rng_state(state.get("rng"))

    def teardown(self, stage: str) -> None:
        self.scoring.shutdown(wait=False, cancel_futures=True)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _pure_sft(h: HybridSchedule) -> bool:
    """λ = 1 at every step: the schedule never asks for a rollout."""
    return h.start >= 1.0 and (h.schedule == "constant" or h.end >= 1.0)


def _gradient_sync(strategy) -> str:
    """How gradients meet across ranks: ``none`` (one process), ``manual`` (DDP: summed once per optimizer
    step by :func:`rlvr.distributed.sum_gradients`), ``strategy`` (FSDP / DeepSpeed reduce in backward)."""
    if rank_world()[1] == 1:
        return "none"
    from torch.nn.parallel import DistributedDataParallel

    return "manual" if isinstance(getattr(strategy, "model", None), DistributedDataParallel) else "strategy"


def _decode_precision(device: torch.device):
    """Decoding on CPU runs outside bf16-mixed autocast: one token per row at a time, the casts of every weight
    cost more than the bf16 matmuls save (measured 0.54 -> 0.90 s per rollout on the bench shape). The
    sampler's log-probs then come from fp32 weights; the update's own π_old pass stays in bf16."""
    return torch.autocast("cpu", enabled=False) if device.type == "cpu" else contextlib.nullcontext()


@contextlib.contextmanager
def _train_mode(net: torch.nn.Module):
    net.train()
    try:
        yield
    finally:
        net.eval()
