"""What an exact resume needs beyond Lightning's own checkpoint, kept loadable with ``weights_only=True``.

Lightning saves the weights, optimizer, scheduler, loop counters, callbacks' and the data module's
``state_dict``. This adds every rank's RNG states (torch, CUDA, numpy, python) and turns the module's
hyper-parameters (settings dataclasses) into plain dicts, so ``torch.load(..., weights_only=True)`` -- the
default of torch >= 2.6 and of ``--ckpt_path`` -- reads the file.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from rlvr.distributed import gather_objects, rank_world


def rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors, lists and ints only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG states in rank order (a collective: call it on all ranks, as checkpoint dumping is)."""
    return gather_objects(rng_state())


def own_rng_state(states: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """This rank's entry of ``states``; None (with the reason) when the world size changed since saving."""
    if not states:
        return None
    rank, world = rank_world()
    if len(states) != world:
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(
            f"checkpoint holds RNG states of {len(states)} rank(s) but this run has {world}: RNG streams are "
            "re-seeded, so sampling after the resume will not repeat the interrupted run's"
        )
        return None
    return states[rank]


def plain(value: Any) -> Any:
    """``value`` with dataclasses turned into dicts, recursively, and objects that are not plain data dropped
    (Lightning's CLI stores an instantiator callable among the hyper-parameters)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items() if _is_data(v)}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def _is_data(v: Any) -> bool:
    if v is None or isinstance(v, (str, int, float, bool, Mapping, list, tuple, torch.Tensor)):
        return True
    return dataclasses.is_dataclass(v) and not isinstance(v, type)


def as_settings(cls: type, value: Any) -> Any:
    """A settings dataclass from itself or from its dict (a checkpoint's plain hyper-parameters)."""
    return cls(**value) if isinstance(value, Mapping) else value


def changed_settings(
    saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "model."
) -> list[str]:
    """``"<prefix><key>: <saved> -> <current>"`` for every (nested, dotted) setting that differs between a
    checkpoint's hyper-parameters and the ones a run is about to use; ``-`` stands for a missing key."""
    flat_saved, flat_current = _flatten(plain(saved), prefix), _flatten(plain(current), prefix)
    return [
        f"{key}: {flat_saved.get(key, '-')} -> {flat_current.get(key, '-')}"
        for key in sorted(flat_saved.keys() | flat_current.keys())
        if flat_saved.get(key, _MISSING) != flat_current.get(key, _MISSING)
    ]


_MISSING = object()


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not str(k).startswith("_"):  # Lightning's _instantiator, _class_path
                out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): list(value) if isinstance(value, tuple) else value}
