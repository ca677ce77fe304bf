"""The trainer's collectives: each is the identity in one process, and each is called the same number of
times on every rank whatever that rank's data (so no rank can wait on a collective another never enters).

Where they are called, per optimizer step: one all-reduce of the loss normalisers (``sum_totals``), one of
the skip flag (``any_rank``), one of the gradients (``sum_gradients``), one gather of the logged metrics
(``mean_metrics``); per rollout: one gather of the rewards when advantages use batch statistics
(``gather_tensors``) and one max of the micro-batch count (``max_int``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device() -> torch.device:
    """Where collective tensors live: CUDA for NCCL, CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_totals(values: Mapping[str, Any]) -> dict[str, Any]:
    """Sum each number / tensor of ``values`` over ranks (the loss normalisers: sequence and token counts)."""
    if rank_world()[1] == 1:
        return dict(values)
    keys = sorted(values)
    flat = [torch.as_tensor(values[k], dtype=torch.float64).reshape(-1) for k in keys]
    buf = torch.cat(flat).to(_device())
    dist.all_reduce(buf)
    out, i = {}, 0
    for k, t in zip(keys, flat):
        part = buf[i : i + t.numel()].cpu()
        i += t.numel()
        v = values[k]
        out[k] = (
            part.to(v.dtype).reshape(v.shape).to(v.device) if torch.is_tensor(v) else type(v)(part.item())
        )
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any (a skip decision all ranks must share)."""
    if rank_world()[1] == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_int(value: int) -> int:
    """The largest ``value`` over ranks."""
    if rank_world()[1] == 1:
        return int(value)
    t = torch.tensor([float(value)], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def sum_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``params`` over ranks, in place (a parameter without a gradient counts as zeros).

    The losses are normalised by whole-batch totals that are already summed over ranks (``sum_totals``), so
    the sum of the ranks' gradients is the gradient of the one-process loss on the union of their batches.
    """
    if rank_world()[1] == 1:
        return
    params = [p for p in params if p.requires_grad]
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for group in by_dtype.values():
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(_device())
        dist.all_reduce(flat)
        i = 0
        for p in group:
            n = p.numel()
            p.grad = flat[i : i + n].view_as(p).to(p.device, p.dtype).clone()
            i += n


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (small picklable things: reward vectors, metric dicts)."""
    if rank_world()[1] == 1:
        return [obj]
    out: list[Any] = [None] * rank_world()[1]
    dist.all_gather_object(out, obj)
    return out


def gather_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """The CPU copy of ``t`` from every rank (sizes may differ), in rank order."""
    return gather_objects(t.detach().cpu())


#: losses already normalised by whole-batch totals: each rank holds its share, the batch's value is the sum
SUMMED = ("train/loss", "train/pg_loss", "train/sft_loss")


def mean_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Every rank's step metrics combined into the one-process value: losses (``SUMMED``) add up, ``*/min``
    by min, ``*/max`` and ``timing_s/*`` by max; other ``train/*`` scalars are means weighted by each rank's
    loss tokens (``_tokens``), the rest (rewards, rollout statistics) by its completions (``_rows``). The
    ``_``-prefixed weights are consumed here, never logged."""
    parts = gather_objects({k: float(v) for k, v in metrics.items()})
    weights = {w: [p.pop(w, 1.0) for p in parts] for w in ("_tokens", "_rows")}
    if len(parts) == 1:
        return parts[0]
    out: dict[str, float] = {}
    for key in sorted({k for p in parts for k in p}):
        ranks = [r for r, p in enumerate(parts) if key in p]
        vals = [parts[r][key] for r in ranks]
        if key in SUMMED:
            out[key] = sum(vals)
        elif key.endswith("/min"):
            out[key] = min(vals)
        elif key.endswith("/max") or key.startswith("timing_s/"):
            out[key] = max(vals)
        else:
            w = [weights["_tokens" if key.startswith("train/") else "_rows"][r] for r in ranks]
            w = w if sum(w) > 0 else [1.0] * len(w)
            out[key] = sum(wi * v for wi, v in zip(w, vals)) / sum(w)
    return out
