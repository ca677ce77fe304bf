"""rlvr: reinforcement learning with verifiable rewards for LLMs, on PyTorch Lightning.

The public API, the stable import path for plugins (``from rlvr import Example, Task, RolloutEngine``):

* tasks: :class:`Example`, :class:`Task` (a protocol: any class with its attributes and methods is a task),
  :class:`Judgement`, :class:`DataError`, :func:`check_task`, :func:`merge_weights`, :func:`max_reward`, and
  the shared answer format: :data:`DEFAULT_SYSTEM_PROMPT`, :func:`format_answer`, :func:`strict_format`,
  :func:`soft_format`, :func:`extract_answer`, :func:`extract_fenced`;
* engines: :class:`RolloutEngine` (a protocol), :class:`Rollout`, :class:`SamplingParams`, and the padding
  helpers :func:`left_pad`, :func:`right_pad`, :func:`completion_mask_from_eos`;
* the trainer: :class:`RLVRModule`.

Names are imported on first use, so ``import rlvr`` (and a verifier module) costs no torch import.
"""

import importlib
import os

# GNU OpenMP threads spin while waiting for work. Next to anything else busy (verifier threads, sandbox
# processes, a second job) that made small CPU ops ~7x slower on our 2-core machines; passive waiting
# costs nothing measurable when the machine is idle. It must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_PUBLIC = {
    "Example": "rlvr.domains.base",
    "Task": "rlvr.domains.base",
    "Judgement": "rlvr.domains.base",
    "DataError": "rlvr.domains.base",
    "check_task": "rlvr.domains.base",
    "merge_weights": "rlvr.domains.base",
    "max_reward": "rlvr.domains.base",
    "DEFAULT_SYSTEM_PROMPT": "rlvr.domains.format",
    "format_answer": "rlvr.domains.format",
    "strict_format": "rlvr.domains.format",
    "soft_format": "rlvr.domains.format",
    "extract_answer": "rlvr.domains.format",
    "extract_fenced": "rlvr.domains.format",
    "RolloutEngine": "rlvr.rollout.base",
    "Rollout": "rlvr.rollout.base",
    "SamplingParams": "rlvr.rollout.base",
    "left_pad": "rlvr.rollout.base",
    "right_pad": "rlvr.rollout.base",
    "completion_mask_from_eos": "rlvr.rollout.base",
    "RLVRModule": "rlvr.module",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'rlvr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
