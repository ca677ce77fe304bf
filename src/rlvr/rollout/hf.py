"""Rollouts on the live HF model with a lean decode loop: the CPU / reference engine.

Why not ``model.generate`` (measured with a 3.5M-parameter Qwen2, 8 prompts x 8 completions, 66 + 128 tokens):
with ``num_return_sequences`` every prompt is prefilled once per completion; ``DynamicLayer`` re-concatenates the
whole KV cache every step (a fresh [N, H, L, D] allocation per layer, K and V: the largest cost on this CPU);
``torch.multinomial`` costs ~3-4 ms per step for [64, 2048]; ``output_scores`` keeps [N, T, V]; and finished
rows are computed until the last one ends. Here each prompt is prefilled once and its cache repeated ``n``
times (prefix sharing), the cache is preallocated, logits are computed for the last position only, sampling
(temperature, then top-k and top-p as HF's warpers) is done in place, finished rows leave the batch, and the loop
ends when all are done. ``benchmarks/bench_rollout.py`` compares the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache, DynamicLayer

from rlvr.rollout.base import Rollout, SamplingParams, completion_mask_from_eos, left_pad


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys / values live in buffers [B, H, capacity, D] allocated at the prefill.

    ``DynamicLayer`` concatenates the whole cache with each new token, copying O(length) per step and layer;
    here a step writes one column in place and attention reads a view of the filled part.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            b, h, _, d = key_states.shape
            self.key_buf = key_states.new_empty(b, h, self.capacity, d)
            self.value_buf = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
        end = self.length + key_states.shape[-2]
        self.key_buf[:, :, self.length : end] = key_states
        self.value_buf[:, :, self.length : end] = value_states
        self.length = end
        return self._view()

    def _view(self) -> tuple[Tensor, Tensor]:
        self.keys, self.values = self.key_buf[:, :, : self.length], self.value_buf[:, :, : self.length]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if not self.is_initialized:
            return
        self.key_buf = self.key_buf.repeat_interleave(repeats, 0)
        self.value_buf = self.value_buf.repeat_interleave(repeats, 0)
        self._view()

    def batch_select_indices(self, indices: Tensor) -> None:
        if not self.is_initialized:
            return
        self.key_buf, self.value_buf = self.key_buf[indices], self.value_buf[indices]
        self._view()


def preallocated_cache(config, capacity: int) -> DynamicCache:
    """The model's ``DynamicCache`` with its plain full-attention layers preallocated for ``capacity`` tokens
    (sliding-window or other special layers are kept as the model defines them)."""
    cache = DynamicCache(config=config)
    if cache.layers:
        cache.layers = [PreallocatedLayer(capacity) if type(x) is DynamicLayer else x for x in cache.layers]
    else:  # no layer types in the config: layers are created on first use
        cache.layer_class_to_replicate = partial(PreallocatedLayer, capacity)
    return cache


def truncate_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Logits [B, V] with tokens outside the top-k / nucleus set to -inf (HF's TopK then TopP warpers)."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p  # [B, V] in ascending order
        drop[..., -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_categorical(probs: Tensor) -> Tensor:
    """One index [B] per row of probs [B, V], by inverse CDF with one uniform per row.

    The same distribution as ``torch.multinomial(probs, 1)``, which on CPU costs ~20x more for [64, 2048] (the
    RNG stream differs, so tokens differ from ``generate``'s for the same seed). Zero-probability tokens are never
    drawn: their CDF step is empty, and ``last`` guards against ``u`` rounding up to the total.
    """
    cdf = probs.double().cumsum(-1)  # [B, V], float64 so the steps of tiny probabilities survive
    total = cdf[:, -1:].contiguous()  # [B, 1]
    u = torch.rand(total.shape, dtype=torch.float64, device=probs.device) * total
    idx = torch.searchsorted(cdf, u, right=True)
    last = torch.searchsorted(cdf, total)  # the last token with p > 0
    return torch.minimum(idx, last).squeeze(1)


def sample_next(logits: Tensor, params: SamplingParams) -> tuple[Tensor, Tensor, Tensor]:
    """Draw one token per row from raw logits [B, V].

    Returns token [B] long, its log-prob [B] under the distribution it was drawn from, and the keep count [B]:
    how many of the most likely tokens top-k / top-p kept (0 when nothing was cut), which defines the kept set.
    Greedy (temperature 0) takes the argmax; its log-prob is under the untempered, untruncated softmax, as
    ``generate(output_scores=True)`` reports it.
    """
    logits = logits.float()
    count = torch.zeros(logits.shape[:1], dtype=torch.long, device=logits.device)
    if params.temperature > 0:
        if params.temperature != 1.0:
            logits = logits / params.temperature
        logits = truncate_logits(logits, params.top_k, params.top_p)
        kept = (logits > float("-inf")).sum(-1)
        count = torch.where(kept < logits.shape[-1], kept, count)
    logp = torch.log_softmax(logits, -1)  # [B, V]
    token = logits.argmax(-1) if params.temperature <= 0 else sample_categorical(logp.exp())
    return token, logp.gather(-1, token[:, None]).squeeze(1), count


class HFEngine:
    """Samples from the live policy module, so its weights are always current (no sync step).

    Args:
        model: the causal LM (a peft model is fine).
        tokenizer: its tokenizer; ``eos_token_id`` and ``pad_token_id`` stop and pad generation.
        stop_token_ids: extra ids that end a completion (e.g. ``<|endoftext|>`` next to ``<|im_end|>``).
        record_keep_mask: also return the sampler's kept set after top-k / top-p truncation (DeepSeek-V3.2
            "keep sampling mask") as ``Rollout.keep_count`` [N, T]: how many top tokens each step kept.
    """

    def __init__(self, model, tokenizer, stop_token_ids: Sequence[int] = (), record_keep_mask: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.record_keep_mask = record_keep_mask
        ids = [tokenizer.eos_token_id, *stop_token_ids]
        self.eos_ids = sorted({int(i) for i in ids if i is not None})
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    def update_weights(self, policy) -> None:
        """Nothing to copy: generation runs on the live module. Re-pointed in case the caller swapped it."""
        self.model = policy

    @torch.no_grad()  # not inference_mode: the rollout's tensors feed the autograd-recorded update
    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams) -> Rollout:
        device = next(self.model.parameters()).device
        prompt_ids, prompt_mask = left_pad(prompts, self.pad_id)
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)  # [P, Lp]
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling
        try:
            ids, logp, keep = self._decode(prompt_ids, prompt_mask, n, params)
        finally:
            self.model.train(was_training)
        mask, truncated = completion_mask_from_eos(ids, self.eos_ids)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return Rollout(
            prompt_ids=prompt_ids.repeat_interleave(n, 0),
            prompt_mask=prompt_mask.repeat_interleave(n, 0),
            completion_ids=ids,
            completion_mask=mask,
            sampler_logp=logp,
            truncated=truncated,
            texts=texts,
            group_ids=torch.arange(len(prompts), device=device).repeat_interleave(n),
            keep_count=keep,
        )

    def _decode(
        self, prompt_ids: Tensor, prompt_mask: Tensor, n: int, params: SamplingParams
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Completion ids [N, T] (pad after the end), sampler log-probs [N, T] (0 after) and, if recorded, the
        keep count [N, T] (0 after the end and where nothing was cut).

        Each prompt row is encoded once; its cache is then repeated ``n`` times. Rows are removed from the batch
        (cache included) as soon as they emit a stop token, so finished sequences cost nothing.
        """
        big_n, t_max = prompt_ids.shape[0] * n, params.max_new_tokens
        device = prompt_ids.device
        # positions count real tokens only, so left padding does not shift them (as in generate)
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        cache = preallocated_cache(self.model.config, prompt_ids.shape[1] + t_max)
        out = self.model(
            input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, past_key_values=cache,
            use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].repeat_interleave(n, 0)  # [N, V]
        attn = prompt_mask.repeat_interleave(n, 0)  # [A, L], A = rows still running
        next_pos = positions[:, -1:].repeat_interleave(n, 0) + 1  # [A, 1]
        rows = torch.arange(big_n, device=device)  # [A] index of each running row in the output
        eos = torch.as_tensor(self.eos_ids, device=device)

        ids = torch.full((big_n, t_max), self.pad_id, dtype=torch.long, device=device)
        logp = torch.zeros((big_n, t_max), device=device)
        keep = None
        if self.record_keep_mask:
            keep = torch.zeros((big_n, t_max), dtype=torch.long, device=device)
        steps = 0
        for t in range(t_max):
            token, token_logp, step_keep = sample_next(logits, params)
            ids[rows, t], logp[rows, t] = token, token_logp
            if keep is not None:
                keep[rows, t] = step_keep
            steps = t + 1
            running = ~torch.isin(token, eos)  # [A]
            if t + 1 == t_max or not running.any():
                break
            if not running.all():  # drop finished rows from the batch and the cache
                idx = running.nonzero().squeeze(1)
                cache.batch_select_indices(idx)
                rows, token, attn, next_pos = rows[idx], token[idx], attn[idx], next_pos[idx]
            attn = torch.cat([attn, attn.new_ones(attn.shape[0], 1)], 1)
            out = self.model(
                input_ids=token[:, None], attention_mask=attn, position_ids=next_pos, past_key_values=cache,
                use_cache=True, logits_to_keep=1,
            )  # fmt: skip
            logits = out.logits[:, -1]
            next_pos = next_pos + 1
        return ids[:, :steps], logp[:, :steps], None if keep is None else keep[:, :steps]
