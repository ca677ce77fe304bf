"""One cgroup per sandbox slot: a memory, a process and a CPU budget for everything a program runs.

RLIMIT_AS and RLIMIT_NPROC bound each process; a program that forks 64 processes of 1 GiB each would still
take 64 GiB. The slot's cgroup bounds them together: memory (every process, and the tmpfs, memfd and page
cache pages they create, which are charged to the cgroup that touches them) and the number of tasks. The
worker joins its cgroup before it forks anything, so the zygote and every program of the slot are in it;
the pool sets the memory budget before each program (``Limits.memory_bytes`` plus the zygote's share), and
the worker kills a program whose processes together used more CPU than its budget (cpuacct / cpu.stat).

cgroup v2 (``/sys/fs/cgroup/cgroup.controllers``) and v1 (``/sys/fs/cgroup/{memory,pids}``) are both
supported. Where neither is writable (not root, a read-only cgroupfs) :func:`slot_cgroup` returns ``None``
and the pool logs one warning: the rlimits stay as the only layer.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
#: added to a program's memory budget for the zygote that forks it (its own pages are charged here too)
ZYGOTE_BYTES = 96 << 20
#: tasks beyond a program's own limit: the zygote, the pre-fork parent, a cleanup helper
ZYGOTE_TASKS = 8


class SlotCgroup:
    """The cgroup(s) of one pool slot. ``procs`` are the files a worker writes its pid into to join."""

    def __init__(self, dirs: dict[str, Path], v2: bool):
        self.dirs, self.v2 = dirs, v2

    @property
    def procs(self) -> list[str]:
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    @property
    def cpu_usage(self) -> str | None:
        """The file holding the CPU time of every process in the cgroup (the worker polls it)."""
        if self.v2:
            return str(self.dirs["memory"] / "cpu.stat")
        return str(self.dirs["cpuacct"] / "cpuacct.usage") if "cpuacct" in self.dirs else None

    def set_limits(self, memory_bytes: int, max_tasks: int) -> None:
        mem = memory_bytes + ZYGOTE_BYTES
        if self.v2:
            d = self.dirs["memory"]
            _write(d / "memory.max", str(mem))
            _write(d / "memory.swap.max", "0", missing_ok=True)
            _write(d / "pids.max", str(max_tasks + ZYGOTE_TASKS))
            return
        d = self.dirs["memory"]
        # memsw (memory + swap) must stay >= the memory limit at every step: order the writes accordingly
        memsw = d / "memory.memsw.limit_in_bytes"
        current = int(_read(d / "memory.limit_in_bytes") or 0)
        if memsw.exists() and mem > current:
            _write(memsw, str(mem))
        _write(d / "memory.limit_in_bytes", str(mem))
        if memsw.exists():
            _write(memsw, str(mem))
        _write(self.dirs["pids"] / "pids.max", str(max_tasks + ZYGOTE_TASKS))

    def oom_kills(self) -> int:
        """How many processes the kernel has killed here for exceeding the memory budget."""
        text = _read(self.dirs["memory"] / ("memory.events" if self.v2 else "memory.oom_control")) or ""
        m = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
        return int(m.group(1)) if m else 0

    def remove(self) -> None:
        """Remove the (empty) cgroup directories; the caller has killed the worker."""
        for d in self.dirs.values():
            try:
                d.rmdir()
            except OSError:
                pass


def slot_cgroup(name: str) -> SlotCgroup | None:
    """Create the cgroup(s) ``rlvr-sandbox/<name>``, or ``None`` where no writable cgroup hierarchy exists."""
    try:
        if (ROOT / "cgroup.controllers").is_file():
            parent = ROOT / "rlvr-sandbox"
            parent.mkdir(exist_ok=True)
            enabled = (ROOT / "cgroup.subtree_control").read_text()
            if not {"memory", "pids"} <= set(enabled.split()):
                _write(ROOT / "cgroup.subtree_control", "+memory +pids")
            _write(parent / "cgroup.subtree_control", "+memory +pids")
            _remove_stale(parent)
            d = parent / name
            d.mkdir(exist_ok=True)
            return SlotCgroup({"memory": d, "pids": d}, v2=True)
        dirs = {}
        for controller in ("memory", "pids", "cpuacct"):
            base = ROOT / controller
            if not (base / "cgroup.procs").is_file():
                if controller == "cpuacct":  # optional: without it CPU is bounded per process only
                    continue
                return None
            d = base / "rlvr-sandbox" / name
            d.mkdir(parents=True, exist_ok=True)
            _remove_stale(d.parent)
            dirs[controller] = d
        return SlotCgroup(dirs, v2=False)
    except OSError:
        return None


def _remove_stale(parent: Path) -> None:
    """Remove the empty slot cgroups of pools whose process is gone (a killed trainer leaves them behind)."""
    for d in parent.iterdir():
        owner = d.name.split("-", 1)[0]
        if d.is_dir() and owner.isdigit() and not Path(f"/proc/{owner}").exists():
            try:
                d.rmdir()
            except OSError:
                pass


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _write(path: Path, text: str, missing_ok: bool = False) -> None:
    if missing_ok and not path.exists():
        return
    with open(path, "w") as f:
        f.write(text)
