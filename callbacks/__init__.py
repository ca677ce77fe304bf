"""Lightning callbacks for rlvr (import name ``callbacks``)."""

from callbacks.adapter_export import AdapterExport
from callbacks.kl_monitor import KLMonitor
from callbacks.periodic_eval import PeriodicEval
from callbacks.progress import ProgressLog
from callbacks.stage_switch import StageSwitch

__all__ = ["AdapterExport", "KLMonitor", "PeriodicEval", "ProgressLog", "StageSwitch"]
