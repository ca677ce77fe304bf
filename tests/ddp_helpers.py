"""Plug-ins for the 2-process DDP test, named by import path in its config (``tests.ddp_helpers.X``).

``ScriptedEngine`` makes each prompt's completions a function of the prompt alone (not of the rank or of a
random stream), so a 2-rank run and a 1-process run over the same prompts see the same experience and their
updates can be compared. It tests the trainer's distributed arithmetic; generation is tested elsewhere.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import lightning as L
import torch

from rlvr.rollout.base import Rollout, completion_mask_from_eos, left_pad, right_pad

CANDIDATES = (
    "<reasoning>\nadd them\n</reasoning>\n<answer>\n3\n</answer>",
    "<reasoning>\nguess</reasoning><answer>7</answer>",
    "the answer is 12",
    "<answer>\n5\n</answer>",
    "<reasoning>\nmultiply\n</reasoning>\n<answer>\n24\n</answer>",
)


class ScriptedEngine:
    def __init__(self, policy, tokenizer, *, stop_token_ids=(), record_keep_mask=False):
        self.tokenizer, self.eos = tokenizer, tokenizer.eos_token_id

    def generate(self, prompts, n, params) -> Rollout:
        texts, ids = [], []
        for p in prompts:
            for k in range(n):
                pick = zlib.crc32(bytes(str((list(p), k, n)), "utf8")) % len(CANDIDATES)
                toks = self.tokenizer(CANDIDATES[pick], add_special_tokens=False)["input_ids"][
                    : params.max_new_tokens - 1
                ]
                ids.append([*toks, self.eos])
                texts.append(self.tokenizer.decode(toks, skip_special_tokens=True))
        p_ids, p_mask = left_pad(prompts, self.tokenizer.pad_token_id)
        c_ids, _ = right_pad(ids, self.tokenizer.pad_token_id)
        mask, truncated = completion_mask_from_eos(c_ids, [self.eos])
        return Rollout(
            prompt_ids=p_ids.repeat_interleave(n, 0), prompt_mask=p_mask.repeat_interleave(n, 0),
            completion_ids=c_ids, completion_mask=mask, sampler_logp=torch.full(c_ids.shape, float("nan")),
            truncated=truncated, texts=texts, group_ids=torch.arange(len(prompts)).repeat_interleave(n),
        )  # fmt: skip

    def update_weights(self, policy) -> None:
        pass


class PoisonMicroBatch(L.Callback):
    """Makes the first policy-loss micro-batch of optimizer step ``step`` NaN on global rank ``rank``."""

    def __init__(self, step: int, rank: int):
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step or trainer.global_rank != self.rank:
            return
        import rlvr.module as m

        real = m.policy_loss

        def poisoned(*args, **kwargs):
            m.policy_loss = real  # once
            loss, metrics = real(*args, **kwargs)
            return loss * float("nan"), metrics

        m.policy_loss = poisoned


class DumpWeights(L.Callback):
    """Writes each rank's final policy weights to ``<out>/rank<r>.pt``."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_train_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.policy.state_dict().items()}
        torch.save(state, self.out / f"rank{trainer.global_rank}.pt")
