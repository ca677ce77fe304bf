"""Multiple-choice scoring by log-likelihood, as lm-evaluation-harness scores ARC and HellaSwag.

Every option ``i`` of a question becomes a request ``(context, delimiter + choice_i)``. The model's summed
log-probability of the continuation tokens given the context is the option's log-likelihood ``ll_i``:

* ``acc``: the option with the largest ``ll_i`` is the prediction;
* ``acc_norm``: the option with the largest ``ll_i / len(choice_i)`` (length in characters of the option
  text, without the delimiter) is the prediction. Characters, not tokens, so the number does not depend on
  the tokenizer.

Tokenisation follows the harness: whitespace at the end of the context moves to the continuation, the pair
is encoded as one string and split where the context's own encoding ends (so merges across the boundary
are attributed to the continuation), no special tokens are added, and an empty context is preceded by the
BOS (or EOS) token. Over-long inputs keep their last ``max_length + 1`` tokens.

Speed: all options of several questions go through one left-padded forward. Left padding puts every
continuation at the right edge, so logits are computed only for the last ``max continuation length``
positions (``logits_to_keep``) instead of over the whole context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlvr.rollout.base import left_pad


@dataclass(frozen=True)
class ChoiceQuestion:
    """One multiple-choice item.

    Attributes:
        uid: the item's id in its benchmark (ARC question id, HellaSwag index).
        context: the prompt text the options continue (no trailing space: the delimiter supplies it).
        choices: the option texts; their character lengths normalise ``acc_norm``.
        gold: index of the correct option.
        labels: how the options are named in predictions files (``"A"``.. for ARC, ``"0"``.. for HellaSwag).
        delimiter: put between context and option (lm-evaluation-harness's ``target_delimiter``).
    """

    uid: str
    context: str
    choices: tuple[str, ...]
    gold: int
    labels: tuple[str, ...]
    delimiter: str = " "

    def requests(self) -> list[tuple[str, str]]:
        """``(context, continuation)`` per option, in option order."""
        return [(self.context, self.delimiter + c) for c in self.choices]


def predictions(logliks: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """``(argmax ll, argmax ll / len(choice))``: the ``acc`` and ``acc_norm`` predictions.

    Ties go to the first option (``argmax`` semantics). An empty option text counts as length 1 so it
    cannot divide by zero.
    """
    if len(logliks) != len(choices) or not choices:
        raise ValueError(f"need one log-likelihood per option: {len(logliks)} for {len(choices)} options")
    pred = max(range(len(logliks)), key=lambda i: (logliks[i], -i))
    normed = [ll / max(len(c), 1) for ll, c in zip(logliks, choices)]
    pred_norm = max(range(len(normed)), key=lambda i: (normed[i], -i))
    return pred, pred_norm


def choice_metrics(logliks: Sequence[float], question: ChoiceQuestion) -> dict[str, float]:
    """``{"acc", "acc_norm"}`` (0.0 or 1.0) of one question from its options' log-likelihoods."""
    pred, pred_norm = predictions(logliks, question.choices)
    return {"acc": float(pred == question.gold), "acc_norm": float(pred_norm == question.gold)}


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``continuation`` as it follows that context (see module doc)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
    cont = whole[len(ctx) :]
    if not ctx:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ctx = [prefix]
    return list(ctx), list(cont)


@torch.no_grad()
def continuation_logliks(
    model,
    tokenizer,
    requests: Sequence[tuple[str, str]],
    *,
    batch_size: int = 32,
    max_length: int | None = None,
) -> list[float]:
    """Summed log-probability of each continuation given its context, in request order.

    Requests are sorted by length (longest first) so each padded batch wastes little; ``batch_size``
    sequences go through one forward. ``max_length`` defaults to the model's ``max_position_embeddings``.
    """
    if not requests:
        return []
    max_length = max_length or getattr(model.config, "max_position_embeddings", None) or 2048
    pairs = [encode_pair(tokenizer, c, x) for c, x in requests]
    # the model reads (ctx + cont)[:-1]; the last token is only a target
    seqs = [(ctx + cont)[-(max_length + 1) :] for ctx, cont in pairs]
    cont_lens = [min(len(cont), len(s) - 1) for (_, cont), s in zip(pairs, seqs)]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out = [0.0] * len(seqs)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            lls = _batch_logliks(model, [seqs[i] for i in idx], [cont_lens[i] for i in idx], pad_id, device)
            for i, ll in zip(idx, lls):
                out[i] = ll
    finally:
        model.train(was_training)
    return out


def _batch_logliks(model, seqs: list[list[int]], cont_lens: list[int], pad_id: int, device) -> list[float]:
    """One left-padded forward over ``seqs``; returns the summed log-prob of each row's last ``cont_len``
    tokens."""
    ids, mask = left_pad(seqs, pad_id)  # [B, L]
    ids, mask = ids.to(device), mask.to(device)
    width = max(max(cont_lens), 1)  # [B, W] targets: the last W tokens of every row
    targets = ids[:, -width:]
    inputs, in_mask = ids[:, :-1], mask[:, :-1]  # [B, L-1]
    positions = (in_mask.cumsum(-1) - 1).clamp(min=0)  # real-token positions, unaffected by left padding
    logits = model(
        input_ids=inputs, attention_mask=in_mask, position_ids=positions, logits_to_keep=width
    ).logits
    logp = torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, W]
    cols = torch.arange(width, device=device)
    keep = cols.unsqueeze(0) >= (width - torch.tensor(cont_lens, device=device)).unsqueeze(1)  # [B, W]
    return (logp * keep).sum(-1).tolist()
