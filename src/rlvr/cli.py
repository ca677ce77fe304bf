"""``rlvr`` / ``python -m rlvr``: LightningCLI for fit/validate, plus score / evaluate / compare / merge.

rlvr fit --config configs/base.yaml --config configs/task/math.yaml --model.lr=1e-5
rlvr fit --print_config
rlvr score --input preds.jsonl --output scored.jsonl
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from lightning.pytorch.cli import LightningCLI

from rlvr.models import ModelLoadError
from rlvr.tasks.base import DataError

# Extra subcommands, each ``main(argv) -> int`` imported lazily so `fit` does not pay for them.
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("rlvr.score", "main"),
    "evaluate": ("rlvr.eval.cli", "evaluate_main"),
    "compare": ("rlvr.eval.cli", "compare_main"),
    "report": ("rlvr.eval.cli", "report_main"),
}


def run_lightning(argv: Sequence[str] | None) -> None:
    from data_modules.mixture import MixtureDataModule
    from rlvr.module import RLVRModule

    LightningCLI(
        RLVRModule,
        MixtureDataModule,
        args=None if argv is None else list(argv),
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
    )


def main(argv: Sequence[str] | None = None) -> int:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if argv and argv[0] in EXTRA_COMMANDS:
            module_name, fn_name = EXTRA_COMMANDS[argv[0]]
            fn: Callable[[list[str]], int] = getattr(__import__(module_name, fromlist=[fn_name]), fn_name)
            return fn(argv[1:])
        run_lightning(argv if explicit else None)
        return 0
    except (DataError, ModelLoadError, ValueError, FileNotFoundError) as e:
        # configuration and data problems: one line, no traceback (RLVR_DEBUG=1 shows it)
        if os.environ.get("RLVR_DEBUG"):
            raise
        print(f"rlvr: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


if __name__ == "__main__":
    raise SystemExit(main())
