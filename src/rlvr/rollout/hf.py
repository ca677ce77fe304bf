"""Rollouts through Hugging Face ``generate`` (batched, KV cache): the CPU / reference engine."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlvr.rollout.base import Rollout, SamplingParams, completion_mask_from_eos, left_pad


class HFEngine:
    """Samples from the live policy module, so its weights are always current (no sync step).

    Args:
        model: the causal LM (a peft model is fine).
        tokenizer: its tokenizer; ``eos_token_id`` and ``pad_token_id`` stop and pad generation.
        stop_token_ids: extra ids that end a completion (e.g. ``<|endoftext|>`` next to ``<|im_end|>``).
    """

    def __init__(self, model, tokenizer, stop_token_ids: Sequence[int] = ()):
        self.model = model
        self.tokenizer = tokenizer
        ids = [tokenizer.eos_token_id, *stop_token_ids]
        self.eos_ids = sorted({int(i) for i in ids if i is not None})
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams) -> Rollout:
        device = next(self.model.parameters()).device
        prompt_ids, prompt_mask = left_pad(prompts, self.pad_id)
        prompt_ids = prompt_ids.repeat_interleave(n, 0).to(device)  # [N, Lp]
        prompt_mask = prompt_mask.repeat_interleave(n, 0).to(device)
        greedy = params.temperature <= 0
        kwargs = dict(
            do_sample=not greedy,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            output_scores=True,  # the processed (tempered, truncated) logits the tokens were drawn from
            return_dict_in_generate=True,
            use_cache=True,
        )
        if not greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling
        try:
            out = self.model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **kwargs)
        finally:
            self.model.train(was_training)
        completion_ids = out.sequences[:, prompt_ids.shape[1] :]  # [N, T]
        scores = torch.stack(out.scores, 1).float()  # [N, T, V]
        sampler_logp = torch.log_softmax(scores, -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
        mask, truncated = completion_mask_from_eos(completion_ids, self.eos_ids)
        sampler_logp = torch.where(mask.bool(), sampler_logp, torch.zeros_like(sampler_logp))
        completion_ids = torch.where(mask.bool(), completion_ids, torch.full_like(completion_ids, self.pad_id))
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        groups = torch.arange(len(prompts), device=device).repeat_interleave(n)
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            completion_mask=mask,
            sampler_logp=sampler_logp,
            truncated=truncated,
            texts=texts,
            group_ids=groups,
        )
