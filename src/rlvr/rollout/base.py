"""The rollout protocol: prompts in, G sampled completions per prompt out, with the sampler's log-probs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingParams:
    """How completions are drawn. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


@dataclass
class Rollout:
    """Completions of ``n`` samples for each of ``P`` prompts, N = P * n, sample ``i`` from prompt ``i // n``.

    Prompts are left-padded and completions right-padded so every completion starts at column ``P_len``.
    """

    prompt_ids: Tensor  # [N, Lp] long, left-padded
    prompt_mask: Tensor  # [N, Lp] long
    completion_ids: Tensor  # [N, T] long, right-padded
    completion_mask: Tensor  # [N, T] float, 1 on generated tokens up to and including EOS
    sampler_logp: Tensor  # [N, T] float, log-prob of each token under the distribution it was drawn from
    truncated: Tensor  # [N] bool, hit max_new_tokens without EOS
    texts: list[str]  # decoded completions, special tokens removed
    group_ids: Tensor  # [N] long, index of the prompt each completion answers
    # [N, T] long, the sampler's kept set (keep-sampling mask) in O(N·T): the number of most likely tokens
    # top-k / top-p kept at each step; 0 where nothing was cut and past the end
    keep_count: Tensor | None = None

    @property
    def lengths(self) -> Tensor:  # [N]
        return self.completion_mask.sum(-1)


class RolloutEngine(Protocol):
    """Generates completions with the *current* policy weights.

    An engine is built as ``Engine(policy, tokenizer, *, stop_token_ids, record_keep_mask, **options)``
    (``options`` from ``model.rollout.options``) and must return log-probs of the sampled tokens under the
    distribution they were drawn from (after temperature and top-k/top-p), so importance weights against the
    sampler compare like with like.
    """

    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams) -> Rollout:
        """``n`` completions for each tokenised prompt (chat template already applied)."""
        ...

    def update_weights(self, policy: torch.nn.Module) -> None:
        """Make the next ``generate`` sample from ``policy``'s current weights; called after every optimizer
        step (an engine that samples from the live module itself has nothing to copy)."""
        ...


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad token lists: ids [B, L] and attention mask [B, L]."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[Tensor, Tensor]:
    """Right-pad token lists: ids [B, W] and float mask [B, W] (W = longest, or ``width``)."""
    width = width if width is not None else max([len(s) for s in seqs] + [1])
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width))
    for i, s in enumerate(seqs):
        s = list(s)[:width]
        if s:
            ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1.0
    return ids, mask


def completion_mask_from_eos(ids: Tensor, eos_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Mask [N, T] covering tokens up to and including the first EOS, and truncated [N] (no EOS)."""
    is_eos = torch.isin(ids, torch.as_tensor(list(eos_ids), device=ids.device))
    seen_before = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # an EOS strictly before this position
    mask = (~seen_before).float()
    return mask, ~is_eos.any(-1)
