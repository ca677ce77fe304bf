"""Tokenising prompts and gold solutions, and per-token log-probs of completions under a model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rlvr.algo.logprobs import entropy_from_logits, token_logprobs
from rlvr.domains.base import Example
from rlvr.rollout.base import left_pad, right_pad


def encode_prompts(
    tokenizer, examples: Sequence[Example], max_prompt_tokens: int | None = None
) -> list[list[int]]:
    """Chat-template token ids of each example's messages, ending with the assistant header.

    Over-long prompts are cut from the left (the system prompt goes first), never silently in the middle.
    """
    out = []
    for ex in examples:
        ids = tokenizer.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers versions differ here
            ids = ids["input_ids"]
        ids = list(ids)
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            ids = ids[-max_prompt_tokens:]
        out.append(ids)
    return out


def encode_solutions(tokenizer, examples: Sequence[Example], max_tokens: int) -> list[list[int]]:
    """Token ids of each gold solution followed by EOS (the SFT targets), cut at ``max_tokens``."""
    eos = tokenizer.eos_token_id
    out = []
    for ex in examples:
        if ex.solution is None:
            raise ValueError(
                f"example {ex.uid or ex.task} has no gold solution, so it cannot be an SFT target"
            )
        ids = tokenizer(ex.solution, add_special_tokens=False)["input_ids"] + [eos]
        out.append(ids[:max_tokens])
    return out


def pad_pairs(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Left-padded prompts [B, Lp] + mask and right-padded completions [B, T] + float mask."""
    p_ids, p_mask = left_pad(prompts, pad_id)
    c_ids, c_mask = right_pad(completions, pad_id)
    return p_ids, p_mask, c_ids, c_mask


def sft_micro_batches(
    tokenizer, examples: Sequence[Example], max_prompt_tokens: int, max_tokens: int, micro_batch_size: int
) -> tuple[list[tuple[Tensor, Tensor, Tensor, Tensor]], float]:
    """SFT inputs in micro-batches ``(p_ids, p_mask, c_ids, c_mask)`` and the number of target tokens of the
    whole batch (so micro-batch losses normalised by it sum to the batch's loss)."""
    if not examples:
        return [], 0.0
    prompts = encode_prompts(tokenizer, examples, max_prompt_tokens)
    targets = encode_solutions(tokenizer, examples, max_tokens)
    total_tokens = float(sum(len(t) for t in targets))
    micro = [
        pad_pairs(
            prompts[lo : lo + micro_batch_size], targets[lo : lo + micro_batch_size], tokenizer.pad_token_id
        )
        for lo in range(0, len(examples), micro_batch_size)
    ]
    return micro, total_tokens


def completion_logits(model, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                      completion_mask: Tensor) -> Tensor:  # fmt: skip
    """Logits [B, T, V] where ``[:, j]`` predicts completion token ``j`` (differentiable).

    The G completions of a prompt share it, as they did in the rollout: each distinct prompt row goes through
    the model once, its KV cache is repeated for its completions, and only completion tokens are run after it
    (so a batch of P prompts x G completions costs P·Lp + P·G·T positions, not P·G·(Lp + T)); gradients flow
    into the shared prompt pass. Logits are computed only for the completion positions. Without repeats it is
    one forward over prompt + completion.
    """
    p_mask = prompt_mask.long()
    rows, inverse = torch.unique(torch.cat([prompt_ids, p_mask], 1), dim=0, return_inverse=True)
    t, lp = completion_ids.shape[1], prompt_ids.shape[1]
    if rows.shape[0] == prompt_ids.shape[0]:
        ids = torch.cat([prompt_ids, completion_ids], 1)  # [B, L]
        attn = torch.cat([p_mask, completion_mask.long()], 1)
        # positions count real tokens only, so left padding does not shift them (matches generate)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=t + 1
        ).logits
        return logits[:, :-1]
    u_ids, u_mask = rows[:, :lp], rows[:, lp:]
    u_pos = (u_mask.cumsum(-1) - 1).clamp(min=0)
    prefix = model(
        input_ids=u_ids, attention_mask=u_mask, position_ids=u_pos, use_cache=True, logits_to_keep=1
    )
    cache = prefix.past_key_values
    cache.batch_select_indices(inverse)  # each completion row gets its prompt's keys and values
    first = prefix.logits[:, -1:][inverse]  # token 0 is predicted by the prompt's last position
    if t == 1:
        return first
    # token j by completion position j - 1: the last completion token is never an input
    attn = torch.cat([p_mask, completion_mask[:, :-1].long()], 1)
    positions = p_mask.sum(-1, keepdim=True) + torch.arange(t - 1, device=p_mask.device)  # [B, T - 1]
    out = model(input_ids=completion_ids[:, :-1], attention_mask=attn, position_ids=positions,
                past_key_values=cache, use_cache=True)  # fmt: skip
    return torch.cat([first, out.logits], 1)


def completion_logprobs(
    model,
    prompt_ids: Tensor,  # [B, Lp] left-padded
    prompt_mask: Tensor,  # [B, Lp]
    completion_ids: Tensor,  # [B, T] right-padded
    completion_mask: Tensor,  # [B, T]
    temperature: float = 1.0,
    with_entropy: bool = False,
    keep_count: Tensor | None = None,  # [B, T] long, how many top tokens the sampler kept (0: all)
) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs [B, T] of the completion tokens (and entropies [B, T] if asked).

    Logits are computed only for the completion positions (``logits_to_keep``), divided by the sampling
    temperature so the probabilities are those the sampler used, and restricted to the sampler's kept set when ``keep_count`` is given.
    """
    logits = completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    temp = temperature if temperature > 0 else 1.0
    logp = token_logprobs(logits, completion_ids, temperature=temp, keep_count=keep_count)
    entropy = entropy_from_logits(logits, temperature=temp, keep_count=keep_count) if with_entropy else None
    return logp, entropy


@torch.no_grad()
def completion_entropies(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0,
                         keep_count=None) -> Tensor:  # fmt: skip
    """Per-token entropies [B, T] of the completion positions, without gradient."""
    return completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature,
                               with_entropy=True, keep_count=keep_count)[1]  # fmt: skip


@torch.no_grad()
def rollout_logprobs(model, exp, micro_batch_size: int, device, temperature: float) -> Tensor:
    """Log-probs [N, T] of every completion of ``exp`` (a :class:`rlvr.experience.Experience`) under ``model``,
    in micro-batches: π_old, fixed before the first of several updates per rollout. Returned on the CPU."""
    out = []
    for rows in torch.arange(len(exp.rollout.texts)).split(micro_batch_size):
        mb = exp.micro_batch(rows, device)
        out.append(completion_logprobs(model, *mb.sequences, temperature, keep_count=mb.keep_count)[0])
    return torch.cat(out).cpu()


@torch.no_grad()
def reference_logprobs(policy, ref_policy, mb, temperature: float) -> Tensor:
    """Log-probs [n, T] of a micro-batch under the reference policy: the frozen copy ``ref_policy`` when there
    is one, else ``policy`` (a peft model) with its adapters disabled."""
    if ref_policy is not None:
        return completion_logprobs(ref_policy, *mb.sequences, temperature, keep_count=mb.keep_count)[0]
    with policy.disable_adapter():
        return completion_logprobs(policy, *mb.sequences, temperature, keep_count=mb.keep_count)[0]
