"""Typed option groups of :class:`rlvr.module.RLVRModule` (each appears as ``--model.<group>.<field>``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TinyModelSettings:
    """The built-in tiny Qwen2 model (``name_or_path: tiny``), its tokenizer trained on the task corpus.

    Attributes:
        vocab_size: BPE vocabulary size.
        hidden_size: model width.
        num_layers: transformer blocks.
        num_heads: attention heads (head_dim = hidden_size / num_heads must be >= 32 for vLLM's CPU kernels).
        num_kv_heads: key/value heads (grouped-query attention).
        intermediate_size: MLP width.
        corpus_size: training examples per task whose text trains the tokenizer.
    """

    vocab_size: int = 2048
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 704
    corpus_size: int = 2000


@dataclass
class LoraSettings:
    """LoRA adapters (peft); ``r = 0`` trains the full model.

    Attributes:
        r: adapter rank (0 = no LoRA).
        alpha: scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt, or ``all-linear``.
    """

    r: int = 0
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"


@dataclass
class HybridSchedule:
    """λ in λ·L_SFT + (1−λ)·L_GRPO over optimizer steps.

    Attributes:
        schedule: constant | linear | cosine | step. ``step`` uses ``start`` before ``switch_step`` and ``end``
            from it on (SFT warm-up, then RL); linear/cosine go from ``start`` to ``end`` over training.
        start: λ at the first step.
        end: λ at the last step (or after ``switch_step``).
        switch_step: the step where ``step`` switches.
        switch_fraction: the switch as a fraction of ``trainer.max_steps`` instead (overrides ``switch_step``),
            so a shortened run (``--trainer.max_steps=30``) still reaches its RL stage.
        rl_lr: learning rate from the first RL step on (None = keep ``lr``); SFT of a small model wants a
            larger step than RL, which otherwise undoes the warm-up in a few updates. A schedule with λ < 1
            from step 0 (no SFT stage) runs at ``rl_lr`` from the start, warmed up over ``rl_warmup_steps``.
        sft_lr_floor: when set, the learning rate falls along a cosine from ``lr`` to ``lr * sft_lr_floor``
            over the SFT stage (the steps before the ``step`` schedule's switch; all of training for the other
            schedules), then RL runs at ``rl_lr`` (or stays at the floor when ``rl_lr`` is None). A small model
            trained from scratch learns its task's facts at the end of a decayed SFT, not at a constant ``lr``.
        refresh_reference: at the SFT -> RL switch, make the reference policy (KL anchor) a copy of the
            policy just trained by SFT, not the model training started from. (With LoRA the reference is
            the base with adapters disabled and cannot be refreshed.)
        reset_optimizer: at the SFT -> RL switch, start AdamW's moments afresh, as a separate RL run from the
            SFT checkpoint would. Carried over, the second moments of the SFT gradients (decaying over ~1/(1-β2)
            = 1000 steps) set the scale of the first RL updates, so the RL learning rate acts far smaller than
            its value.
        rl_warmup_steps: the RL learning rate is reached linearly over this many steps after the switch (0 =
            at once). Fresh AdamW moments make the first updates about ``lr`` in every coordinate whatever the
            gradient's size, which at a useful RL lr knocks a freshly SFT'd small model back several points.
    λ = 1 skips generation (pure SFT); λ = 0 skips the SFT forward.
    """

    schedule: str = "constant"
    start: float = 0.0
    end: float = 0.0
    switch_step: int = 0
    switch_fraction: float | None = None
    rl_lr: float | None = None
    sft_lr_floor: float | None = None
    refresh_reference: bool = True
    reset_optimizer: bool = True
    rl_warmup_steps: int = 0


@dataclass
class DapoSettings:
    """DAPO's rollout-side techniques (the loss side is ``loss.loss_type=dapo`` + ``loss.epsilon_high``).

    Attributes:
        dynamic_sampling: drop prompt groups whose rewards have zero variance (no signal) and refill the batch
            with groups of newly drawn prompts, for at most ``max_sampling_rounds`` extra rounds.
        max_sampling_rounds: refill rounds per step (the batch may stay smaller when they run out).
        overlong_buffer: soft overlong punishment window L_cache in tokens before ``max_new_tokens``
            (0 = off): the reward falls linearly by up to ``overlong_penalty_factor`` across the window.
        overlong_penalty_factor: scale of that penalty.
        mask_truncated_completions: completions that hit ``max_new_tokens`` take no part in the loss.
    """

    dynamic_sampling: bool = False
    max_sampling_rounds: int = 3
    overlong_buffer: int = 0
    overlong_penalty_factor: float = 1.0
    mask_truncated_completions: bool = False


@dataclass
class EntropyControl:
    """Adaptive entropy bonus (Skywork-OR1; TRL's ``use_adaptive_entropy``), off when ``target`` is None
    (then ``loss.entropy_coef`` stays fixed). After each optimizer step, with H the step's mean token entropy
    over every rank: γ ← γ + lr if H ≤ target else γ − lr, clamped to [0, max_coef]. The next step applies γ
    only while H ≤ target (else no bonus), so the bonus acts when entropy has collapsed below the target.
    ``loss.entropy_coef`` is the starting γ.

    Attributes:
        target: the entropy (nats/token) below which the bonus acts.
        lr: the fixed step of γ per optimizer step (TRL's ``entropy_coef_delta``).
        max_coef: upper bound of γ.
    """

    target: float | None = None
    lr: float = 0.01
    max_coef: float = 0.1


@dataclass
class MultitaskBalance:
    """Balancing tasks inside one batch (an extension: no reference trainer has it).

    Attributes:
        per_task_advantage_std: scale advantages by the std of the sample's own task in the batch (needs
            ``scale_rewards=batch``), so a task with wide rewards does not shrink another's advantages.
        (The per-task token normaliser is ``loss.per_task_normaliser``.)
        task_loss_weights: task name -> weight of its policy loss (default 1 each): each sample's loss is
            multiplied by its task's weight; with ``loss.per_task_normaliser`` the weights combine the per-task
            losses (renormalised over the tasks present in the batch).
    """

    per_task_advantage_std: bool = False
    task_loss_weights: dict[str, float] | None = None


@dataclass
class RolloutSettings:
    """Which engine generates the rollouts.

    Attributes:
        engine: a name in :data:`rlvr.rollout.ENGINES` (``hf``: the in-process HF model, CPU or GPU) or the
            import path of your own engine class (see :class:`rlvr.RolloutEngine`).
        options: extra keyword arguments of the engine's constructor.
    """

    engine: str = "hf"
    options: dict[str, Any] | None = None
