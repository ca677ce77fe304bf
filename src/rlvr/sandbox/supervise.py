"""The zygote's side of one program, for :mod:`worker` (stdlib only, loaded by path like it): capture
its output (head and tail), wait for it under the wall-clock, output and cgroup CPU budgets, kill whatever it
left behind and reap it.
"""

from __future__ import annotations

import os
import select
import signal
import time

MAX_READ_BYTES = 16 << 20  # a program printing more than this is killed (it would only burn CPU)


class Capture:
    """Keeps the head and the tail of a stream (the harness reports last, so the tail matters)."""

    def __init__(self, cap: int) -> None:
        self.head_cap, self.tail_cap = cap // 2, cap - cap // 2
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > 2 * self.tail_cap:  # trim rarely: amortised O(1) per byte
            del self.tail[: len(self.tail) - self.tail_cap]

    def text(self) -> tuple[str, bool]:
        if self.total <= self.head_cap + self.tail_cap:
            return (self.head + self.tail).decode("utf-8", "replace"), False
        skipped = self.total - len(self.head) - self.tail_cap
        mid = f"\n...[{skipped} bytes truncated]...\n".encode()
        return (self.head + mid + self.tail[-self.tail_cap :]).decode("utf-8", "replace"), True


def kill_leftovers(pid: int, ctx: dict) -> None:
    """Kill the program's process group and anything that escaped it (setsid, double fork)."""
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except OSError:
            pass
    if os.getpid() == 1:  # init of our own pid namespace: -1 means every other process in it
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    elif ctx["iso"]["uid_drop"]:  # no pid namespace: kill everything running as the program's uid
        helper = os.fork()
        if helper == 0:
            try:
                os.setresuid(ctx["run_uid"], ctx["run_uid"], ctx["run_uid"])
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(helper, 0)


def reap(pids: list[int]) -> list[tuple[int, float]]:
    """Wait for the programs (and, as pid 1, for every orphan); returns their (wait status, CPU seconds)."""
    statuses = []
    for pid in pids:
        _, status, usage = os.wait4(pid, 0)
        statuses.append((status, usage.ru_utime + usage.ru_stime))
    if os.getpid() == 1:
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
    return statuses


def cpu_seconds(path: str | None) -> float | None:
    """CPU time of every process in the slot's cgroup so far (cgroup v1 cpuacct.usage or v2 cpu.stat)."""
    if not path:
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if path.endswith("cpuacct.usage"):
        return int(text) / 1e9
    usage = next((line.split()[1] for line in text.splitlines() if line.startswith("usage_usec")), None)
    return int(usage) / 1e6 if usage is not None else None


def pump(pid: int, pipes: dict[int, Capture], deadline: float, cpu: tuple[str, float] | None = None) -> str:
    """Read the program's output until it exits; returns ``""``, ``"wall"``, ``"output"`` or ``"cpu"`` (why
    killed). ``cpu`` = (usage file, limit in CPU seconds): the whole program's CPU budget, polled."""
    cpu_start = cpu_seconds(cpu[0]) if cpu else None
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux < 5.3: poll the child's state every 5 ms instead
        pidfd = None
    poller = select.poll()
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    for fd in pipes:
        poller.register(fd, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "wall"
            wait_ms = max(1, int(left * 1000)) if pidfd is not None else min(5, max(1, int(left * 1000)))
            if cpu_start is not None:
                wait_ms = min(wait_ms, 20)
                used = cpu_seconds(cpu[0])
                if used is not None and used - cpu_start > cpu[1]:
                    return "cpu"
            exited = False
            for fd, _ in poller.poll(wait_ms):
                if fd == pidfd:
                    exited = True
                elif data := os.read(fd, 1 << 16):
                    pipes[fd].add(data)
                else:
                    poller.unregister(fd)
            if sum(c.total for c in pipes.values()) > MAX_READ_BYTES:
                return "output"
            if pidfd is None:  # WNOWAIT: leave the child to be reaped by reap
                exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            if exited:
                return ""
    finally:
        if pidfd is not None:
            os.close(pidfd)


def drain(pipes: dict[int, Capture]) -> None:
    """Read what is left in the pipes once every writer is dead (or stop at the read cap)."""
    for fd, cap in pipes.items():
        os.set_blocking(fd, False)
        try:
            while cap.total <= MAX_READ_BYTES and (data := os.read(fd, 1 << 16)):
                cap.add(data)
        except BlockingIOError:
            pass
