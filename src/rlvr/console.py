"""What a run prints: dependency noise filtered out, hub access that fails fast when there is no network.

:func:`quiet` is called once by the CLI before anything is built. It removes messages that tell a user
nothing about their run (Lightning's product tips and seed notice, its "modules in eval mode" warning — the frozen reference
policy is in eval mode on purpose —, transformers' deprecation and weight-loading progress bars) and
SyntaxWarnings raised while compiling candidate programs, which are the model's text, not our code.
"""

from __future__ import annotations

import logging
import os
import warnings

_IGNORED_WARNINGS = (
    r".*module\(s\) in eval mode",
    r".*overridden `transfer_batch_to_device`",
    r".*`past_key_values` is deprecated",
    r".*isinstance\(treespec, LeafSpec\)",
    r".*does not have many workers",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.getMessage())
        # deepspeed (a dev dependency Lightning imports when installed) announces a CPU-only machine
        return not message.startswith(("💡 Tip", "Seed set to", "Setting accelerator to CPU"))


def quiet() -> None:
    """Filter the known noise (idempotent)."""
    for pattern in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=SyntaxWarning)  # from compiling candidate code
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.fabric.utilities.seed", "DeepSpeed"):  # fmt: skip
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a base dependency
        pass
