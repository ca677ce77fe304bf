"""Run untrusted Python programs: a warm pool of isolated worker processes, one fork per program.

Each pool slot is a worker process (:mod:`rlvr.sandbox.worker`, a fresh ``python -I``) that isolates
itself once and then forks a child per program, so a program costs a fork rather than an interpreter start-up.
What a program gets (see the worker for how):

* **network**: none. The worker lives in a new network namespace (only a downed loopback): every connect
  fails. As root this is ``unshare(CLONE_NEWNET)``; as another user a user namespace is created first.
* **filesystem**: every mount is read-only (a private mount namespace, ``mount_setattr``). A program sees the
  interpreter (stdlib, venv, site-packages), the system libraries under ``/usr`` and ``/lib``, a fresh
  ``/proc`` of its own pid namespace (no parent's ``/proc/<pid>``), and its own temp dir: writable only that
  dir (its cwd and ``$HOME``) in a private size-capped tmpfs on ``/tmp``, and a private ``/dev/shm``, both
  fresh for every program. Empty to it (:data:`HIDDEN_DIRS`): ``/etc``, ``/var``, ``/run`` (and the host unix
  sockets there), ``/home``, ``/root``, ``~``, ``/opt``, ``/srv``, ``/mnt``, ``/media``, the trainer's working
  directory and the folder around the rlvr checkout (project, data, runs) — except the interpreter's own
  directories inside them. Abstract unix sockets belong to the network namespace, which is new.
* **processes**: a pid namespace per worker (programs cannot see or signal the trainer; its init, the
  zygote, cannot be killed from inside). After each program everything left in it is killed, including
  processes that escaped the process group. As root the program runs as an unprivileged uid
  (``uid_base + slot``); otherwise as root of the user namespace with every capability cleared. Always
  ``no_new_privs`` and an empty capability bounding set.
* **limits**: one memory and task budget for the whole program (its processes, and the tmpfs, memfd and
  page cache they fill) in the slot's cgroup (:mod:`rlvr.sandbox.cgroups`, v2 or v1); per process
  RLIMIT_CPU (decides ``timeout``), RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_NOFILE, no core files; a
  wall-clock backstop kills everything; stdout/stderr captured and capped (head and tail kept), a program
  printing more than 16 MiB is killed; stdin is ``/dev/null``; the environment is scrubbed. After each
  program ``/tmp`` and ``/dev/shm`` are fresh tmpfs mounts; a worker whose cleanup fails is replaced.

When namespaces are unavailable (e.g. a container without user namespaces) the pool logs one loud warning
and still runs programs with rlimits, a private cwd, the timeout and (as root) the uid drop.

Without a writable cgroup (not root) the rlimits are the only layer, per process (one warning says so). Not a
defence against kernel exploits. Programs run in a forked interpreter (the worker's imported modules).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rlvr.sandbox.cgroups import slot_cgroup

log = logging.getLogger(__name__)

STATUSES = ("passed", "failed", "timeout", "error")
WORKER_SCRIPT = Path(__file__).with_name("worker.py")
#: modules imported once in each worker so programs using them pay nothing to import them
PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "typing",
           "traceback", "operator", "copy", "random", "statistics", "fractions", "decimal", "datetime", "io")  # fmt: skip
#: what programs see empty: homes (keys, tokens, caches), host configuration and state (/etc, /var, /run and
#: the unix sockets in them), optional trees, the trainer's working directory and the folder around the rlvr
#: checkout (project, data, runs). The interpreter's own directories inside any of them stay visible.
_CHECKOUT = str(Path(__file__).resolve().parents[3])
HIDDEN_DIRS = ("/root", "/home", "~", "/etc", "/var", "/run", "/opt", "/srv", "/mnt", "/media", ".",
               os.path.dirname(_CHECKOUT))  # fmt: skip
_GRACE_S = 10.0  # how long after a program's own timeout the pool waits before declaring the worker hung
_warned = False  # the "no isolation" warning is logged once per process, not once per worker


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits.

    Attributes:
        timeout_s: CPU-time limit of each of the program's processes (RLIMIT_CPU, whole seconds, rounded up):
            what decides a ``timeout`` verdict, so a verdict does not flip when the machine is busy.
        wall_factor, wall_extra_s: the wall-clock backstop, ``timeout_s * wall_factor + wall_extra_s``, for a
            program that waits instead of computing (sleep, a blocking read); the program is killed after it.
        memory_bytes: address-space limit (RLIMIT_AS).
        max_processes: processes and threads the program may have (RLIMIT_NPROC).
        max_file_bytes: largest file it may write (RLIMIT_FSIZE).
        max_open_files: file descriptors (RLIMIT_NOFILE).
        max_output_bytes: stdout and stderr are each capped to this (first half and last half kept).
    """

    timeout_s: float = 5.0
    wall_factor: float = 3.0
    wall_extra_s: float = 2.0
    memory_bytes: int = 1 << 30
    max_processes: int = 64
    max_file_bytes: int = 16 << 20
    max_open_files: int = 256
    max_output_bytes: int = 64 << 10


@dataclass(frozen=True)
class Result:
    """What running one program gave.

    Attributes:
        status: ``"passed"`` (exit code 0), ``"failed"`` (non-zero exit, signal, output limit),
            ``"timeout"`` (wall or CPU limit) or ``"error"`` (the sandbox itself failed; not the program's fault).
        exit_code: the exit code, ``-N`` when killed by signal N, ``None`` when it never ran.
        stdout, stderr: captured text, capped (see ``truncated``); undecodable bytes replaced.
        duration_s: wall time from fork to exit.
        reason: short human-readable cause for anything but ``"passed"``.
        truncated: whether stdout or stderr was cut.
    """

    status: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    reason: str = ""
    truncated: bool = False


def _error(reason: str) -> Result:
    return Result(status="error", exit_code=None, reason=reason)


class _Worker:
    """One pool slot: a worker process and the pipes to it. Used by one thread at a time."""

    def __init__(self, slot: int, config: dict[str, Any]) -> None:
        self.config = {**config, "run_uid": config["uid_base"] + slot}
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.cgroup = cg = slot_cgroup(f"{os.getpid()}-{slot}") if config["isolate"] else None
        self.config.update(cgroup_procs=cg.procs if cg else [], cpu_usage=cg.cpu_usage if cg else None)

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        # start_new_session: the worker's group can be killed as a whole and never gets the trainer's ^C
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER_SCRIPT), json.dumps(self.config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env, start_new_session=True,
        )  # fmt: skip
        self.info = self._recv(time.monotonic() + 60.0)

    def call(self, source: str, limits: Limits, tester: str | None = None) -> dict[str, Any]:
        """Run ``source``; with ``tester``, run it paired (see :meth:`SandboxPool.run`): the tester's program
        is sent only once the worker says the candidate is forked."""
        assert self.proc is not None and self.proc.stdin is not None
        deadline = time.monotonic() + limits.timeout_s * limits.wall_factor + limits.wall_extra_s + _GRACE_S
        oom_before = 0
        if self.cgroup is not None:  # one budget for all the program's processes, set before it starts
            self.cgroup.set_limits(limits.memory_bytes, limits.max_processes)
            oom_before = self.cgroup.oom_kills()
        self._send({"source": source, "limits": asdict(limits), "paired": tester is not None}, deadline)
        if tester is not None:
            if self._recv(deadline).get("forked") is not True:
                raise RuntimeError("sandbox worker did not fork the candidate")
            self._send({"tester": tester}, deadline)
        res = self._recv(deadline)
        if (
            self.cgroup is not None
            and self.cgroup.oom_kills() > oom_before
            and res.get("status") != "timeout"
        ):
            mib = limits.memory_bytes >> 20
            res.update(status="failed", reason=f"memory limit ({mib} MiB for all the program's processes)")
        return res

    def _send(self, msg: dict[str, Any], deadline: float) -> None:
        body = json.dumps(msg).encode()
        self._write_all(struct.pack(">I", len(body)) + body, deadline)

    def _recv(self, deadline: float) -> dict[str, Any]:
        head = self._read_exactly(4, deadline)
        return json.loads(self._read_exactly(struct.unpack(">I", head)[0], deadline))

    @staticmethod
    def _wait(fd: int, event: int, deadline: float) -> None:
        # poll, not select: a busy trainer may hold more than FD_SETSIZE (1024) descriptors
        poller = select.poll()
        poller.register(fd, event)
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            raise TimeoutError("sandbox worker did not answer in time")

    def _write_all(self, data: bytes, deadline: float) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        os.set_blocking(fd, False)  # a hung worker must not block the caller on a full pipe
        while view:
            self._wait(fd, select.POLLOUT, deadline)
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue

    def _read_exactly(self, n: int, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd, buf = self.proc.stdout.fileno(), bytearray()
        while len(buf) < n:
            self._wait(fd, select.POLLIN, deadline)
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError(f"sandbox worker exited (code {self.proc.poll()})")
            buf += chunk
        return bytes(buf)

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, 9)  # the worker and, through its pid namespace, every program of it
        except OSError:
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        self.proc = None

    def remove_cgroup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()

    def stop(self) -> None:
        """Polite shutdown: EOF on its stdin makes the zygote exit (taking its namespace down)."""
        if self.proc is None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=2.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def _cpu_count() -> int:
    """CPUs this process may run on (the affinity mask in containers), at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _warn_isolation(info: dict[str, Any]) -> None:
    global _warned
    iso, problems = info.get("isolation", {}), list(info.get("warnings", []))
    if not iso.get("net_ns"):
        problems.insert(0, "NO network isolation: programs can reach the network")
    if not iso.get("readonly_root"):
        problems.insert(0, "NO read-only filesystem: programs can write wherever their uid may")
    if not iso.get("seccomp"):
        problems.append("no seccomp filter (pyseccomp/libseccomp missing): programs may create namespaces")
    if not info.get("cgroup"):
        problems.append(
            "no writable cgroup: memory and process limits hold per process (rlimits), not per program"
        )
    if problems and not _warned:
        _warned = True
        log.warning("SANDBOX ISOLATION DEGRADED (logged once): %s", "; ".join(problems))


class SandboxPool:
    """A warm pool of sandbox workers; :meth:`run` is thread-safe and runs programs concurrently.

    Args:
        workers: number of worker processes = programs run at once (default: the CPU count).
        isolate: use namespaces (network, mount, pid; user when not root). ``False`` keeps only rlimits,
            the timeout, the private cwd and, as root, the uid drop (a warning is logged).
        uid_base: as root, slot ``i`` runs programs as uid ``uid_base + i`` (an otherwise unused uid range).
        tmpfs_bytes: size of each worker's private ``/tmp`` (all temp dirs of its programs).
        hidden_dirs: directories programs see empty (``~`` expands to the trainer's home, ``.`` is its working
            directory); default :data:`HIDDEN_DIRS`. The interpreter's own directories inside them stay
            visible.

    Workers start lazily on first use and are restarted after a crash or a hang. A process that forks after
    creating a pool must create its own (the pool refuses to run from another pid).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        isolate: bool = True,
        uid_base: int = 64000,
        tmpfs_bytes: int = 256 << 20,
        hidden_dirs: Sequence[str] | None = None,
    ) -> None:
        self.workers = workers or _cpu_count()
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._pid = os.getpid()
        config = dict(isolate=isolate, uid=os.getuid(), gid=os.getgid(), uid_base=uid_base, tmpfs_bytes=tmpfs_bytes,
                      preload=PRELOAD, hidden_dirs=[os.path.expanduser(d) for d in (hidden_dirs or HIDDEN_DIRS)])  # fmt: skip
        self._all = [_Worker(slot, config) for slot in range(self.workers)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for w in self._all:
            self._idle.put(w)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="rlvr-sandbox")
        self._closed = False
        self.isolation: dict[str, Any] = {}  # what the first started worker reported

    def run(
        self,
        programs: Sequence[str],
        limits: Limits | None = None,
        *,
        timeout_s: float | None = None,
        testers: Sequence[str] | None = None,
    ) -> list[Result]:
        """Run every program (at most ``workers`` at once); results in input order. Never raises for a
        program's behaviour; a broken sandbox gives ``status="error"`` results.

        With ``testers`` (one per program), each program is a *candidate* run paired with its tester: both in
        the sandbox, connected by a pipe pair on fds 3 (read) and 4 (write); the candidate's output is
        discarded, the tester's program reaches the worker only after the candidate is forked, and the result
        is the tester's. See :mod:`rlvr.domains.code.harness`."""
        if self._closed:
            raise RuntimeError("SandboxPool is closed")
        if os.getpid() != self._pid:
            raise RuntimeError("SandboxPool used from a forked process; create a new pool there")
        limits = limits or Limits()
        if timeout_s is not None:
            limits = replace(limits, timeout_s=timeout_s)
        if testers is not None and len(testers) != len(programs):
            raise ValueError(f"{len(programs)} programs but {len(testers)} testers")
        pairs = zip(programs, testers if testers is not None else [None] * len(programs))
        futures = [self._executor.submit(self._run_one, p, limits, t) for p, t in pairs]
        return [f.result() for f in futures]

    def _run_one(self, source: str, limits: Limits, tester: str | None = None) -> Result:
        worker = self._idle.get()
        try:
            if worker.proc is None or worker.proc.poll() is not None:
                worker.kill()
                try:
                    worker.start()
                except (OSError, ValueError, TimeoutError, EOFError) as e:
                    worker.kill()
                    return _error(f"sandbox worker failed to start: {e}")
                self.isolation = self.isolation or worker.info.get("isolation", {})
                _warn_isolation(worker.info)
            try:
                res = worker.call(source, limits, tester)
            except Exception as e:  # broken pipe, EOF, timeout, garbage: never the caller's problem
                worker.kill()  # hung or dead: the next program gets a fresh worker
                return _error(f"sandbox worker lost: {e}")
            retire = res.pop("retire", None)
            if retire:  # its cleanup or bookkeeping failed: this program's result stands, the slot is renewed
                log.warning("sandbox worker replaced: %s", retire)
                worker.kill()
            return Result(**res)
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Stop every worker (programs still running are killed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        for w in self._all:
            w.stop()
            w.remove_cgroup()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: SandboxPool | None = None
_default_lock = threading.Lock()


def default_pool() -> SandboxPool:
    """The process-wide pool (``RLVR_SANDBOX_WORKERS`` workers, default the CPU count), made on first use."""
    global _default
    with _default_lock:
        if _default is None or _default._pid != os.getpid() or _default._closed:
            workers = int(os.environ.get("RLVR_SANDBOX_WORKERS", "0")) or None
            _default = SandboxPool(workers)
            atexit.register(_default.close)
        return _default


def run_programs(
    programs: Sequence[str],
    timeout_s: float = 5.0,
    *,
    limits: Limits | None = None,
    pool: SandboxPool | None = None,
    testers: Sequence[str] | None = None,
) -> list[Result]:
    """Run each program in the sandbox, concurrently (bounded by the pool size); results in input order.
    With ``testers``, each program runs paired with its tester (see :meth:`SandboxPool.run`)."""
    return (pool or default_pool()).run(programs, limits, timeout_s=timeout_s, testers=testers)
