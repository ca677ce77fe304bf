"""Per-token log-probabilities and entropies from logits, bounded in memory.

Both functions take logits already aligned with the scored tokens (``logits[:, t]`` is the distribution of
``ids[:, t]``). Work is done in float32 (float64 stays float64) one chunk at a time, so a bf16 [N, T, V]
tensor is never copied whole; with gradients on and more than one chunk, each chunk is recomputed in the
backward pass (activation checkpointing) instead of keeping float32 copies of the whole vocabulary alive.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ["entropy_from_logits", "token_logprobs"]

CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 64 MiB in float32


def _prepare(logits: Tensor, temperature: float, keep_mask: Tensor | None, keep_count: Tensor | None,
             ids: Tensor | None = None) -> Tensor:  # fmt: skip
    """Float32-or-wider logits [n, t, V] / temperature, with tokens outside the sampler's kept set at -inf: the
    set is ``keep_mask`` [n, t, V], or the ``keep_count`` [n, t] tokens with the largest logits (top-k and top-p
    keep a prefix of the tokens ordered by logit, so its length defines it; 0 = all). By count, two tokens
    that this forward orders differently from the sampler by a rounding error swap places, a negligible change
    of mass (a cut-off value would let any number of near-ties in or out). With ``ids`` the drawn token is
    always kept."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature != 1.0:
        z = z / temperature
    if keep_mask is not None:
        z = z.masked_fill(~keep_mask, float("-inf"))
    if keep_count is not None:
        with torch.no_grad():
            k = keep_count.long().unsqueeze(-1)  # [n, t, 1]
            ordered = z.detach().sort(-1, descending=True).values
            threshold = ordered.gather(-1, (k.clamp(1, z.shape[-1]) - 1)).masked_fill(k <= 0, float("-inf"))
            drop = z.detach() < threshold
            if ids is not None:
                drop = drop.scatter(-1, ids.unsqueeze(-1), False)
        z = z.masked_fill(drop, float("-inf"))
    return z


def _logprob_chunk(logits, ids, keep_mask, keep_count, temperature: float) -> Tensor:
    z = _prepare(logits, temperature, keep_mask, keep_count, ids)  # [n, t, V]
    return z.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)  # [n, t]


def _entropy_chunk(logits, keep_mask, keep_count, temperature: float) -> Tensor:
    logp = torch.log_softmax(_prepare(logits, temperature, keep_mask, keep_count), dim=-1)  # [n, t, V]
    # excluded tokens have p = 0 and logp = -inf; zero logp there so 0 * -inf gives no NaN (nor in backward)
    logp_finite = logp.masked_fill(~torch.isfinite(logp), 0.0)
    return -(logp.exp() * logp_finite).sum(-1)  # [n, t]


def _chunked(fn: Callable[..., Tensor], logits: Tensor, per_position: list[Tensor | None], *extra) -> Tensor:
    """Apply ``fn(logits_chunk, *per_position_chunks, *extra) -> [n, t]`` over chunks of [N, T] positions."""
    n, t, v = logits.shape
    rows = max(1, CHUNK_ELEMENTS // max(1, t * v))
    cols = t if t * v <= CHUNK_ELEMENTS else max(1, CHUNK_ELEMENTS // v)
    if rows >= n and cols >= t:
        return fn(logits, *per_position, *extra)
    recompute = torch.is_grad_enabled() and logits.requires_grad
    out_rows = []
    for i in range(0, n, rows):
        parts = []
        for j in range(0, t, cols):
            args = [logits[i : i + rows, j : j + cols]]
            args += [None if x is None else x[i : i + rows, j : j + cols] for x in per_position]
            parts.append(
                checkpoint(fn, *args, *extra, use_reentrant=False) if recompute else fn(*args, *extra)
            )
        out_rows.append(torch.cat(parts, dim=1))
    return torch.cat(out_rows, dim=0)


def token_logprobs(
    logits: Tensor,
    ids: Tensor,
    temperature: float = 1.0,
    keep_mask: Tensor | None = None,
    keep_count: Tensor | None = None,
) -> Tensor:
    """log pi(ids[n, t] | logits[n, t]) [N, T] in float32 (or float64 for float64 logits).

    logits: [N, T, V]; ids: [N, T] long; temperature: logits are divided by it (the sampler's temperature).
    keep_mask: [N, T, V] bool, the tokens the sampler could draw (top-p / top-k truncation, DeepSeek-V3.2 "keep
        sampling mask"); logits outside it are -inf before the softmax, so pi_theta and pi_old are compared on
        the same truncated action space. Every position must keep at least one token (padding rows: all True);
        an id outside its keep set gets -inf.
    keep_count: [N, T] long, the same set in O(N·T): the number of most likely tokens the sampler kept (0: no
        truncation); the [N, T, V] mask is only ever built one chunk at a time. ``ids`` are always kept.
    """
    return _chunked(_logprob_chunk, logits, [ids, keep_mask, keep_count], temperature)


def entropy_from_logits(
    logits: Tensor,
    temperature: float = 1.0,
    keep_mask: Tensor | None = None,
    keep_count: Tensor | None = None,
) -> Tensor:
    """Entropy (nats) [N, T] of softmax(logits / temperature) restricted to the kept set (``keep_mask`` [N, T, V]
    or ``keep_count`` [N, T], as in :func:`token_logprobs`)."""
    return _chunked(_entropy_chunk, logits, [keep_mask, keep_count], temperature)
