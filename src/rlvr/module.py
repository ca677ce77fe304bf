"""The LightningModule: one GRPO / hybrid SFT+GRPO step, read top to bottom as the algorithm.

    rollout  = engine.generate(prompts, n=completions_per_prompt)
    rewards  = score(rollout, references)                # [N, C] components, mask, total [N]
    adv      = group_advantages(rewards.total, groups)   # [N]
    loss     = λ·L_SFT(gold) + (1-λ)·L_GRPO(rollout, adv)

Each stage is a function in its own module (rollout/, rewards.py, losses.py, sequences.py); this file only
orchestrates them and logs.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from rlvr import losses
from rlvr.models import TINY, add_lora, build_tiny, load_causal_lm, load_tokenizer
from rlvr.rewards import RewardBatch, score_async
from rlvr.rollout.base import Rollout, SamplingParams
from rlvr.rollout.hf import HFEngine
from rlvr.sequences import completion_logprobs, encode_prompts, encode_solutions, pad_pairs
from rlvr.tasks.base import Example
from rlvr.train_logging import StepLogger


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters (peft). ``r = 0`` trains the full model."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"


@dataclass(frozen=True)
class HybridSchedule:
    """λ in λ·L_SFT + (1-λ)·L_GRPO over training steps: constant | linear | cosine | step.

    ``step`` uses ``start`` before ``switch_step`` and ``end`` from it on (SFT warm-up, then RL).
    λ = 1 skips generation (pure SFT); λ = 0 skips the SFT forward.
    """

    schedule: str = "constant"
    start: float = 0.0
    end: float = 0.0
    switch_step: int = 0


@dataclass(frozen=True)
class TinyModelSettings:
    """The built-in tiny Qwen2 model (``name_or_path: tiny``), its tokenizer trained on the task corpus."""

    vocab_size: int = 2048
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 704
    corpus_size: int = 2000


class RLVRModule(L.LightningModule):
    """GRPO and hybrid SFT+GRPO on verifiable-reward tasks.

    Args:
        name_or_path: hub id, local checkpoint directory, or ``tiny`` (built from a config, offline).
        tiny: settings of the tiny model (used only when ``name_or_path`` is ``tiny``).
        dtype: parameter dtype (float32 | bfloat16 | float16).
        load_in_4bit: load the base model in 4-bit NF4 (QLoRA; needs LoRA).
        lora: LoRA adapters; with LoRA the reference policy is the base with adapters disabled.
        completions_per_prompt: G, completions sampled per prompt (the group size).
        micro_batch_size: completions per forward/backward; accumulation steps are derived and logged.
        max_new_tokens: generation budget per completion.
        max_prompt_tokens: longer prompts are cut from the left.
        temperature: sampling temperature (also applied to training log-probs).
        top_p: nucleus sampling.
        top_k: top-k sampling (0 = off).
        loss: the policy-loss family and its options (TRL names).
        scale_rewards: advantage scaling: group | batch | none.
        hybrid: λ schedule of the SFT term.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up.
        max_grad_norm: gradient clipping (0 = off).
        val_max_new_tokens: generation budget in validation (greedy); defaults to ``max_new_tokens``.
        log_samples_every_n_steps: write a sample completion to TensorBoard every N steps (0 = never).
        truncation_warn_frac: warn when more than this fraction of completions hit ``max_new_tokens``.
        scoring_threads: threads that run verifiers while the policy forward proceeds.
    """

    def __init__(
        self,
        name_or_path: str = TINY,
        tiny: TinyModelSettings = TinyModelSettings(),  # noqa: B008
        dtype: str = "float32",
        load_in_4bit: bool = False,
        lora: LoraSettings = LoraSettings(),  # noqa: B008
        completions_per_prompt: int = 8,
        micro_batch_size: int = 64,
        max_new_tokens: int = 128,
        max_prompt_tokens: int = 1024,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        loss: losses.PolicyLossConfig = losses.PolicyLossConfig(),  # noqa: B008
        scale_rewards: str = "group",
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
        _check(completions_per_prompt >= 1, "completions_per_prompt must be >= 1")
        _check(micro_batch_size >= 1, "micro_batch_size must be >= 1")
        _check(scale_rewards in ("group", "batch", "none"), f"scale_rewards={scale_rewards!r}: use group|batch|none")
        _check(not load_in_4bit or lora.r > 0, "load_in_4bit needs LoRA: set lora.r > 0 (QLoRA)")
        _check(
            completions_per_prompt > 1 or hybrid.schedule == "constant" and hybrid.start == 1.0,
            "GRPO needs completions_per_prompt >= 2 (a group of one has zero advantage)",
        )
        self.save_hyperparameters()
        self.automatic_optimization = False  # several updates per rollout, guarded steps
        self.name_or_path, self.tiny, self.dtype_name, self.load_in_4bit = name_or_path, tiny, dtype, load_in_4bit
        self.lora, self.loss_cfg, self.hybrid = lora, loss, hybrid
        self.G, self.micro_batch_size = completions_per_prompt, micro_batch_size
        self.sampling = SamplingParams(max_new_tokens, temperature, top_p, top_k)
        self.val_sampling = SamplingParams(val_max_new_tokens or max_new_tokens, 0.0)
        self.max_prompt_tokens, self.scale_rewards = max_prompt_tokens, scale_rewards
        self.lr, self.weight_decay, self.warmup_steps, self.max_grad_norm = lr, weight_decay, warmup_steps, max_grad_norm
        self.scoring = ThreadPoolExecutor(max_workers=scoring_threads, thread_name_prefix="rlvr-score")
        self.step_log = StepLogger(self, log_samples_every_n_steps, truncation_warn_frac)
        self.policy = self.ref_policy = self.tokenizer = self.engine = None
        self.tasks: dict = {}
        self.stage_sft_weight: float | None = None  # set by callbacks.StageSwitch

    # ---------------------------------------------------------------- setup
    def configure_model(self) -> None:
        if self.policy is not None:
            return
        self.tasks = dict(self.trainer.datamodule.tasks) if self.trainer.datamodule is not None else {}
        path = self.name_or_path
        if path == TINY:
            corpus = self.trainer.datamodule.tokenizer_corpus(self.tiny.corpus_size)
            settings = {k: v for k, v in asdict(self.tiny).items() if k != "corpus_size"}
            path = str(build_tiny(corpus, **settings))
        self.tokenizer = load_tokenizer(path)
        model = load_causal_lm(path, dtype=self.dtype_name, load_in_4bit=self.load_in_4bit)
        if self.lora.r > 0:
            model = add_lora(
                model, r=self.lora.r, alpha=self.lora.alpha, dropout=self.lora.dropout,
                target_modules=self.lora.target_modules,
            )  # fmt: skip
        elif self.loss_cfg.beta > 0:  # a frozen copy; with LoRA the base itself is the reference
            self.ref_policy = load_causal_lm(path, dtype=self.dtype_name).eval().requires_grad_(False)
        self.policy = model.train()  # from_pretrained returns eval mode
        self.engine = HFEngine(model, self.tokenizer, stop_token_ids=[self.tokenizer.pad_token_id])
        self.step_log.setup_metrics(self.tasks)

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        warm = max(1, self.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a list of Examples (text + references); tensors are made on the device later

    # ---------------------------------------------------------------- the step
    def training_step(self, batch: list[Example], batch_idx: int) -> None:
        lam = self.sft_weight()
        opt = self.optimizers()
        metrics: dict[str, float] = {"train/sft_weight": lam}
        if lam > 0:
            metrics["train/sft_loss"] = self.sft_backward(batch, weight=lam)
        if lam < 1:
            t0 = time.perf_counter()
            rollout = self.generate(batch)
            t1 = time.perf_counter()
            wait_rewards = score_async(
                self.scoring, self.tasks, [ex.task for ex in rollout_examples(batch, self.G)], rollout.texts,
                [ex.reference for ex in rollout_examples(batch, self.G)],
            )  # fmt: skip
            pg_metrics, rewards, t_score = self.grpo_backward(rollout, wait_rewards, weight=1 - lam)
            metrics.update(pg_metrics)
            metrics.update({"timing_s/generate": t1 - t0, "timing_s/score": t_score})
            self.step_log.rollout(batch, rollout, rewards, metrics)
        t2 = time.perf_counter()
        metrics["train/grad_norm"], metrics["train/skipped_steps"] = self.guarded_step(opt)
        metrics["timing_s/update"] = time.perf_counter() - t2 + metrics.get("timing_s/forward_backward", 0.0)
        metrics["train/loss"] = lam * metrics.get("train/sft_loss", 0.0) + (1 - lam) * metrics.get("train/pg_loss", 0.0)
        self.step_log.scalars(metrics)

    def sft_weight(self) -> float:
        """λ of this step: the StageSwitch callback's decision if one is active, else the schedule."""
        if self.stage_sft_weight is not None:
            return self.stage_sft_weight
        h = self.hybrid
        return losses.sft_weight(h.schedule, self.global_step, self._total_steps(), h.start, h.end, h.switch_step)

    def generate(self, batch: list[Example]) -> Rollout:
        prompts = encode_prompts(self.tokenizer, batch, self.max_prompt_tokens)
        return self.engine.generate(prompts, self.G, self.sampling)

    def sft_backward(self, batch: list[Example], weight: float) -> float:
        """Token-level cross-entropy on the gold solutions, backward scaled by ``weight``; returns the loss."""
        prompts = encode_prompts(self.tokenizer, batch, self.max_prompt_tokens)
        targets = encode_solutions(self.tokenizer, batch, self.sampling.max_new_tokens)
        total_tokens = float(sum(len(t) for t in targets))
        value = 0.0
        for lo in range(0, len(batch), self.micro_batch_size):
            sl = slice(lo, lo + self.micro_batch_size)
            p_ids, p_mask, c_ids, c_mask = (
                x.to(self.device) for x in pad_pairs(prompts[sl], targets[sl], self.tokenizer.pad_token_id)
            )
            logp, _ = completion_logprobs(self.policy, p_ids, p_mask, c_ids, c_mask)
            loss = losses.sft_loss(logp, c_mask, total_tokens=total_tokens)
            self.manual_backward(weight * loss)
            value += loss.item()
        return value

    def grpo_backward(self, rollout: Rollout, wait_rewards, weight: float):
        """Policy-gradient loss over micro-batches, backward scaled by ``weight``.

        The first forward runs while the verifiers score (advantages are needed only at the loss).
        """
        n = rollout.completion_ids.shape[0]
        cfg = self.loss_cfg
        need_entropy = cfg.entropy_coef > 0 or cfg.top_entropy_quantile < 1.0 or True  # entropy is always logged
        rewards: RewardBatch | None = None
        adv = None
        t_score = 0.0
        sums: dict[str, float] = {}
        total_tokens = float(rollout.completion_mask.sum())
        for lo in range(0, n, self.micro_batch_size):
            sl = slice(lo, lo + self.micro_batch_size)
            p_ids, p_mask = rollout.prompt_ids[sl], rollout.prompt_mask[sl]
            c_ids, c_mask = rollout.completion_ids[sl], rollout.completion_mask[sl]
            logp, entropy = completion_logprobs(
                self.policy, p_ids, p_mask, c_ids, c_mask, self.sampling.temperature, with_entropy=need_entropy
            )
            ref_logp = self.reference_logprobs(p_ids, p_mask, c_ids, c_mask) if cfg.beta > 0 else None
            if rewards is None:
                t = time.perf_counter()
                rewards = wait_rewards()
                t_score = time.perf_counter() - t
                adv = losses.group_advantages(
                    rewards.total, rollout.group_ids.cpu(), scale_rewards=self.scale_rewards
                ).to(self.device)
            loss, m = losses.policy_loss(
                logp, logp.detach(), adv[sl], c_mask, cfg,
                ref_logp=ref_logp, entropy=entropy, sampler_logp=rollout.sampler_logp[sl],
                total_sequences=n, total_tokens=total_tokens,
            )  # fmt: skip
            self.manual_backward(weight * loss)
            frac = c_ids.shape[0] / n
            sums["train/pg_loss"] = sums.get("train/pg_loss", 0.0) + loss.item()
            for k, v in m.items():
                if not k.startswith("seq/") and v.numel() == 1:
                    sums[f"train/{k}"] = sums.get(f"train/{k}", 0.0) + frac * float(v)
        sums["train/advantage_abs"] = adv.abs().mean().item()
        return sums, rewards, t_score

    @torch.no_grad()
    def reference_logprobs(self, p_ids, p_mask, c_ids, c_mask) -> torch.Tensor:
        """Log-probs under the reference policy: the base with adapters disabled, or the frozen copy."""
        temp = self.sampling.temperature
        if self.ref_policy is not None:
            return completion_logprobs(self.ref_policy, p_ids, p_mask, c_ids, c_mask, temp)[0]
        with self.policy.disable_adapter():
            return completion_logprobs(self.policy, p_ids, p_mask, c_ids, c_mask, temp)[0]

    def guarded_step(self, opt) -> tuple[float, float]:
        """Clip, then step unless the gradient is non-finite (skipped steps are counted and warned about)."""
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        max_norm = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.tensor(0.0)
        if not torch.isfinite(norm):
            self.step_log.skipped += 1
            rank_zero_warn(f"step {self.global_step}: non-finite gradient norm, update skipped")
            opt.zero_grad(set_to_none=True)
        else:
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.lr_schedulers().step()
        return float(norm), float(self.step_log.skipped)

    def _total_steps(self) -> int:
        steps = self.trainer.max_steps if self.trainer is not None else -1
        return steps if steps and steps > 0 else max(1, self.hybrid.switch_step)

    # ---------------------------------------------------------------- validation
    def validation_step(self, batch: list[Example], batch_idx: int) -> None:
        prompts = encode_prompts(self.tokenizer, batch, self.max_prompt_tokens)
        rollout = self.engine.generate(prompts, 1, self.val_sampling)
        rewards = score_async(
            self.scoring, self.tasks, [ex.task for ex in batch], rollout.texts, [ex.reference for ex in batch]
        )()
        self.step_log.validation(batch, rewards)

    def teardown(self, stage: str) -> None:
        self.scoring.shutdown(wait=False, cancel_futures=True)


def rollout_examples(batch: list[Example], n: int) -> list[Example]:
    """The example behind each completion, in rollout order (completion i answers prompt i // n)."""
    return [ex for ex in batch for _ in range(n)]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
