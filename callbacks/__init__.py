"""Lightning callbacks for rlvr (import name ``callbacks``)."""

from callbacks.adapter_export import AdapterExport
from callbacks.kl_monitor import KLMonitor
from callbacks.periodic_eval import PeriodicEval
from callbacks.progress import ProgressLog
from callbacks.sample_logger import SampleLogger
from callbacks.stability_guard import StabilityGuard
from callbacks.stage_switch import StageSwitch
from callbacks.validation_points import ValidationPoints

__all__ = [
    "AdapterExport",
    "KLMonitor",
    "PeriodicEval",
    "ProgressLog",
    "SampleLogger",
    "StabilityGuard",
    "StageSwitch",
    "ValidationPoints",
]
