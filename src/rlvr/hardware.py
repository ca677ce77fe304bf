"""What this machine's CPU can do fast, and the training precision that follows from it.

The task configs ask for ``bf16-mixed``: on a CPU with native bf16 instructions (AVX512-BF16, AMX-BF16, or
Arm's BF16) autocast's bf16 matmuls run ~4x faster than fp32. On a CPU without them (an AVX2-only x86 such as
AMD Zen 3) bf16 is emulated: measured 50x slower than fp32 on an AVX2 AMD EPYC (a 6144x256 @ 256x1024 matmul,
2.8 s vs 0.057 s), which makes a 6-minute run take hours. There a CPU run falls back to fp32, says so in one
line, and ``RLVR_CPU_BF16=1`` keeps bf16 anyway (to reproduce a bf16 run's numbers bit for bit, slowly).
"""

from __future__ import annotations

import os
from pathlib import Path

#: /proc/cpuinfo flags of native bf16 arithmetic (x86: AVX512-BF16, AMX-BF16; aarch64: BF16)
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
FORCE_ENV = "RLVR_CPU_BF16"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (the ``flags`` / ``Features`` lines of /proc/cpuinfo); empty where unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU executes bf16 arithmetic natively (see :data:`BF16_FLAGS`)."""
    return bool(cpu_flags(cpuinfo) & BF16_FLAGS)


def runs_on_cpu(accelerator) -> bool:
    """Whether a Trainer with this ``accelerator`` setting (a name, an Accelerator, or the CLI's
    ``{class_path: ...}``) trains on the CPU; ``auto`` is resolved the way Lightning resolves it."""
    if accelerator is None or accelerator == "auto":
        from lightning.fabric.utilities.device_parser import _select_auto_accelerator

        return _select_auto_accelerator() == "cpu"
    if isinstance(accelerator, str):
        return accelerator == "cpu"
    name = accelerator.get("class_path", "") if hasattr(accelerator, "get") else type(accelerator).__name__
    return str(name).rsplit(".", 1)[-1] == "CPUAccelerator"


#: the precisions the fallback replaces: bf16 compute over fp32 weights (``bf16-true`` is a deliberate choice
#: of bf16 weights, with ``model.dtype``; it is left alone, and the module already warns about it)
MIXED_BF16 = ("bf16-mixed", "bf16")


def cpu_precision(precision, accelerator, cpuinfo: str | None = None) -> tuple[object, str | None]:
    """The precision to train with and, when it differs from ``precision``, the one-line reason: bf16-mixed on
    a CPU without native bf16 becomes ``32-true`` (unless ``RLVR_CPU_BF16=1``)."""
    if precision not in MIXED_BF16 or os.environ.get(FORCE_ENV) == "1":
        return precision, None
    if not runs_on_cpu(accelerator) or cpu_has_native_bf16(cpuinfo):
        return precision, None
    return "32-true", (
        f"trainer.precision={precision} -> 32-true: this CPU has no native bf16 (no avx512_bf16 / amx_bf16 / "
        f"bf16 flag), where bf16 is emulated ~50x slower than fp32; {FORCE_ENV}=1 keeps bf16"
    )
