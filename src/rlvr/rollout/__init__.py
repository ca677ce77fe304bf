"""Rollout engines behind one protocol (:class:`rlvr.rollout.base.RolloutEngine`), chosen by name.

``model.rollout.engine`` names an entry of :data:`ENGINES` or the import path of a user's engine class
(``my_pkg.engines.MyEngine``); a new engine is one file here plus one line in :data:`ENGINES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: engine name -> "module:Class" (imported on first use, so choosing one never imports another's stack)
ENGINES: dict[str, str] = {
    "hf": "rlvr.rollout.hf:HFEngine",
    "vllm": "rlvr.rollout.vllm:VLLMEngine",
}


def engine_class(name: str) -> type:
    """The engine class named ``name`` (an :data:`ENGINES` key or ``pkg.module.Class``)."""
    from rlvr.domains.registry import import_object

    if name not in ENGINES and "." not in name:
        raise ValueError(
            f"unknown rollout engine {name!r}: choose one of {sorted(ENGINES)} or give pkg.module.Class"
        )
    return import_object(ENGINES.get(name, name))


def build_engine(
    name: str,
    policy: Any,
    tokenizer: Any,
    *,
    stop_token_ids: Sequence[int] = (),
    record_keep_mask: bool = False,
    options: dict[str, Any] | None = None,
):
    """An engine for ``policy`` (see :class:`rlvr.rollout.base.RolloutEngine` for the constructor contract)."""
    cls = engine_class(name)
    try:
        engine = cls(policy, tokenizer, stop_token_ids=stop_token_ids, record_keep_mask=record_keep_mask,
                     **(options or {}))  # fmt: skip
    except TypeError as e:  # a constructor that does not take the documented arguments or the options
        raise ValueError(
            f"rollout engine {name!r} could not be built: {e} (see rlvr.RolloutEngine)"
        ) from None
    missing = [m for m in ("generate", "update_weights") if not callable(getattr(engine, m, None))]
    if missing:
        raise ValueError(f"rollout engine {name!r} lacks {missing}: see rlvr.RolloutEngine")
    return engine
