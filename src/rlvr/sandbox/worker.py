"""The sandbox worker process: a stdlib-only script, run as ``python -I worker.py CONFIG_JSON``.

:class:`rlvr.sandbox.pool.SandboxPool` starts one per slot. The worker isolates itself once (a user
namespace first when not root, then network, mount and pid namespaces), makes every mount read-only except a
private ``/tmp`` and ``/dev/shm`` tmpfs, pre-imports common modules and becomes a *zygote*: for each program it
forks a fresh child (a fork, not an interpreter start-up) that drops privileges, applies rlimits and runs the
program in a fresh temp dir. The zygote captures output, enforces the wall timeout, kills every process the
program left behind (``supervise.py``) and answers.

Protocol on stdin/stdout, both ways: 4-byte big-endian length + UTF-8 JSON. The first message from the worker
is the handshake ``{"isolation": {...}, "warnings": [...]}``; then one request
``{"source": str, "limits": {...}}`` gets one response ``{"status", "exit_code", "stdout", ...}``.

It must not import ``rlvr`` (it runs with ``-I``, outside the package) and must stay single-threaded
(it forks).
"""

from __future__ import annotations

import atexit
import importlib.util
import io
import json
import math
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import types


def _load(file: str, name: str) -> types.ModuleType:
    # by path: putting this directory on sys.path would let it shadow stdlib modules in programs (code.py)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), file)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


isolation = _load("isolation.py", "sandbox_isolation")
supervise = _load("supervise.py", "sandbox_supervise")
# the runtime of paired programs, compiled once here and importable by every program as `rlvr_paired`
sys.modules["rlvr_paired"] = _load("paired.py", "rlvr_paired")
SETUP_FAILED = 121  # exit code of a child that could not isolate itself; it never runs the program


# ---------------------------------------------------------------- the child: runs one program


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _close_inherited_fds(keep: int = 2) -> None:
    """Close every descriptor above ``keep`` (the zygote's pipes); by listing them, since closing up to a huge
    RLIMIT_NOFILE one by one is slow where ``close_range`` is unavailable."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16)))
    for fd in fds:
        if fd > keep:
            try:
                os.close(fd)
            except OSError:  # the directory's own descriptor, already closed
                pass


def _run_child(
    source: str,
    tmpdir: str,
    out_w: int,
    err_w: int,
    ctx: dict,
    lim: dict,
    channel: tuple[int, int] | None = None,
) -> None:
    """In the forked child: isolate, then run ``source`` as ``__main__``; never returns. ``channel`` (read,
    write) becomes fds 3 and 4: the pipes between a candidate process and its tester."""
    try:
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        if channel is not None:
            moved = [os.dup(fd) for fd in channel]  # dup first: a channel fd may already be 3 or 4
            os.dup2(moved[0], 3)
            os.dup2(moved[1], 4)
        _close_inherited_fds(keep=4 if channel is not None else 2)
        os.chdir(tmpdir)
        isolation.set_limits(lim, lim["max_processes"] + ctx["nproc_extra"])
        isolation.drop_privileges(ctx)
        isolation.set_dumpable(False)  # again: a uid drop resets it
        if ctx["seccomp"]:
            isolation.load_seccomp(ctx["seccomp"])
        os.environ.clear()
        os.environ.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=tmpdir, TMPDIR=tmpdir, LANG="C.UTF-8")
    except BaseException as e:  # never run a program we could not isolate
        os.write(2, f"sandbox setup failed: {e!r}\n".encode())
        os._exit(SETUP_FAILED)
    atexit._clear()  # the zygote's handlers are not the program's
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
    )
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    sys.argv = ["<program>"]
    sys.dont_write_bytecode = True
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    code = 0
    try:
        exec(compile(source, "<program>", "exec"), main.__dict__)
    except SystemExit as e:
        code = _exit_code(e)
    except BaseException as e:  # the traceback without this function's frame, as `python prog.py` prints it
        traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
        code = 1
    try:  # what the interpreter does on exit: join threads, run atexit, flush
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = code or 1
    os._exit(code)


# ---------------------------------------------------------------- the zygote: one program at a time


def _clean_up(dirs: list[str], ctx: dict) -> None:
    """After a program: fresh tmpfs mounts (O(1), see :func:`isolation.fresh_tmpfs`), or without a private
    tmpfs, remove its directories. Any failure retires this worker (``ctx["retire"]``): the pool replaces
    it, so the next program runs on a healthy slot."""
    try:
        if ctx["iso"]["private_tmp"]:
            isolation.fresh_tmpfs(ctx["tmpfs_bytes"])
        else:
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
            if any(os.path.lexists(d) for d in dirs):
                ctx["retire"] = f"could not remove {dirs}"
    except Exception as e:
        ctx["retire"] = f"cleanup failed: {e!r}"


def _fork_child(source: str, tmpdir: str, out_w: int, err_w: int, ctx: dict, lim: dict, channel=None) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            _run_child(source, tmpdir, out_w, err_w, ctx, lim, channel)
        finally:  # the child must never return into the zygote's loop
            os._exit(SETUP_FAILED)
    return pid


def _private_dir(ctx: dict) -> str:
    tmpdir = tempfile.mkdtemp(prefix="prog-", dir=ctx["tmp_base"])
    if ctx["iso"]["uid_drop"]:
        os.chown(tmpdir, ctx["run_uid"], ctx["run_uid"])
    return tmpdir


def run_one(source: str, lim: dict, ctx: dict, fetch_tester=None) -> dict:
    """Fork a child for ``source``, supervise it and clean up; the result dict of the protocol.

    With ``fetch_tester`` (paired mode) ``source`` is a candidate program: it is forked first, with its
    output discarded and a pipe pair to a second child; only then is the tester's program fetched (so the
    candidate's memory never held it) and forked on the other end. The result is the tester's."""
    dirs, pipes, pids, own_fds = [_private_dir(ctx)], {}, [], []
    try:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        own_fds += [out_w, err_w]
        pipes = {
            out_r: supervise.Capture(lim["max_output_bytes"]),
            err_r: supervise.Capture(lim["max_output_bytes"]),
        }
        start = time.monotonic()
        if fetch_tester is None:
            pids.append(_fork_child(source, dirs[0], out_w, err_w, ctx, lim))
        else:
            to_cand_r, to_cand_w = os.pipe()
            to_test_r, to_test_w = os.pipe()
            own_fds += [to_cand_r, to_cand_w, to_test_r, to_test_w]
            null = os.open(os.devnull, os.O_WRONLY)
            own_fds.append(null)
            pids.append(_fork_child(source, dirs[0], null, null, ctx, lim, (to_cand_r, to_test_w)))
            tester = fetch_tester()
            dirs.append(_private_dir(ctx))
            pids.insert(0, _fork_child(tester, dirs[1], out_w, err_w, ctx, lim, (to_test_r, to_cand_w)))
            del tester
        for fd in own_fds:
            os.close(fd)
        own_fds = []
        wall = lim["timeout_s"] * lim["wall_factor"] + lim["wall_extra_s"]
        # the whole program's CPU budget (its forks, and in paired mode candidate and tester together)
        budget = lim["timeout_s"] * len(pids) + 0.5
        killed = supervise.pump(
            pids[0], pipes, start + wall, (ctx["cpu_usage"], budget) if ctx["cpu_usage"] else None
        )
        duration = time.monotonic() - start
        for pid in pids:
            supervise.kill_leftovers(pid, ctx)
        reaped = supervise.reap(pids)
        pids = []
        supervise.drain(pipes)
    finally:
        if pids:  # failed half-way (e.g. no tester came): nothing forked may outlive this call
            for pid in pids:
                supervise.kill_leftovers(pid, ctx)
            supervise.reap(pids)
        for fd in [*pipes, *own_fds]:
            os.close(fd)
        _clean_up(dirs, ctx)
    code = os.waitstatus_to_exitcode(reaped[0][0])
    cpu_limit = max(1, math.ceil(lim["timeout_s"]))
    # any process of the program (in paired mode the candidate, whose tester then only sees it vanish)
    out_of_cpu = any(
        os.WIFSIGNALED(st) and (os.WTERMSIG(st) == signal.SIGXCPU or (os.WTERMSIG(st) == signal.SIGKILL and cpu >= cpu_limit))
        for st, cpu in reaped
    )  # fmt: skip
    (stdout, t1), (stderr, t2) = pipes[out_r].text(), pipes[err_r].text()
    if out_of_cpu:
        verdict, reason = "timeout", f"cpu time limit ({cpu_limit} s)"
    elif killed == "cpu":
        verdict, reason = "timeout", f"cpu time limit ({budget:g} s for all the program's processes)"
    elif killed == "wall":
        verdict, reason = (
            "timeout",
            f"wall time limit ({wall:g} s, a backstop to the {cpu_limit} s CPU limit)",
        )
    elif killed == "output":
        verdict, reason = "failed", f"output limit ({supervise.MAX_READ_BYTES} bytes)"
    elif code == SETUP_FAILED and stderr.startswith("sandbox setup failed"):
        verdict, reason = "error", stderr.strip()
    elif code == 0:
        verdict, reason = "passed", ""
    else:
        verdict, reason = "failed", f"signal {-code}" if code < 0 else f"exit code {code}"
    return dict(
        status=verdict, exit_code=code, stdout=stdout, stderr=stderr, duration_s=duration,
        reason=reason, truncated=t1 or t2,
    )  # fmt: skip


def _recv(fd: int) -> dict | None:
    def exactly(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    head = exactly(4)
    body = None if head is None else exactly(struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


def _send(fd: int, msg: dict) -> None:
    body = json.dumps(msg).encode()
    data = memoryview(struct.pack(">I", len(body)) + body)
    while data:
        data = data[os.write(fd, data) :]


def _fetch_tester() -> str:
    """Paired mode: tell the pool the candidate is forked, then read the tester's program."""
    _send(1, {"forked": True})
    msg = _recv(0)
    if msg is None or not isinstance(msg.get("tester"), str):
        raise RuntimeError("pool closed before sending the tester")
    return msg["tester"]


def _warm_up() -> None:
    """Do once in the zygote what every child would otherwise initialise lazily on its own: the first
    ``compile()`` builds all AST types (~1 ms), the first traceback loads the formatting machinery."""
    exec(compile("def f(x):\n    return [i for i in range(x)]\nf(3)", "<warm-up>", "exec"), {})
    try:
        raise ValueError("warm-up")
    except ValueError as e:
        traceback.format_exception(type(e), e, e.__traceback__)
    null = os.open(os.devnull, os.O_WRONLY)
    io.TextIOWrapper(io.FileIO(null, "w", closefd=True), encoding="utf-8", errors="backslashreplace").close()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    in_cgroup = isolation.join_cgroups(cfg.get("cgroup_procs") or [])
    seccomp = isolation.usable_seccomp_program()
    iso, warnings = isolation.isolate(cfg)
    # Non-dumpable (inherited by every child): no program can open another's /proc/<pid>/{mem,fd,environ},
    # nor the zygote's, where a tester's program passes through (paired mode).
    isolation.set_dumpable(False)
    ctx = {
        "seccomp": seccomp,
        "iso": iso,
        "run_uid": cfg["run_uid"],
        "nproc_extra": 0,
        "tmpfs_bytes": cfg["tmpfs_bytes"],
        "cpu_usage": cfg.get("cpu_usage") if in_cgroup else None,
        "retire": None,
    }
    ctx["tmp_base"] = "/tmp" if iso["private_tmp"] else tempfile.mkdtemp(prefix="rlvr-sandbox-")
    if not (iso["uid_drop"] or iso["user_ns"]):
        # RLIMIT_NPROC counts every task of our uid (the trainer's threads too): leave room for them
        ctx["nproc_extra"] = isolation.count_tasks(os.getuid())
    for name in cfg["preload"]:  # imported once here, free in every forked child
        try:
            __import__(name)
        except ImportError:
            pass
    _warm_up()
    import gc

    gc.freeze()  # keep the zygote's objects out of the children's collections (fewer copied pages)
    iso["seccomp"] = ctx["seccomp"] is not None
    _send(1, {"isolation": iso, "warnings": warnings, "pid": os.getpid(), "cgroup": in_cgroup})
    try:
        while (req := _recv(0)) is not None:
            fetch = _fetch_tester if req.get("paired") else None
            try:
                res = run_one(req.pop("source"), req["limits"], ctx, fetch)
            except Exception as e:  # a zygote bug: answer, then let the pool replace this worker
                res = dict(status="error", exit_code=None, stdout="", stderr="", duration_s=0.0,
                           reason=f"sandbox worker error: {e!r}", truncated=False)  # fmt: skip
                ctx["retire"] = ctx["retire"] or f"sandbox worker error: {e!r}"
            _send(1, {**res, "retire": ctx["retire"]})
            if ctx["retire"]:
                break
    finally:
        if not iso["private_tmp"]:
            shutil.rmtree(ctx["tmp_base"], ignore_errors=True)


if __name__ == "__main__":
    main()
