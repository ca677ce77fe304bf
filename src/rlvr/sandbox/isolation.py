"""Isolation for the sandbox worker (stdlib only; loaded by path by :mod:`rlvr.sandbox.worker`, never by ``rlvr``).

Once per worker, :func:`isolate` enters new namespaces and locks the filesystem down; per program, the forked
child calls :func:`set_limits` and :func:`drop_privileges`. All system calls go through ``ctypes`` because
``os.unshare``/``os.mount`` do not exist before Python 3.12 (mount not at all).

What each step buys:
  * user namespace (non-root only): the capabilities needed for the other namespaces, over them only;
  * network namespace: no interface but a downed loopback, so every connect fails;
  * mount namespace: mounts made private, everything remounted read-only (``mount_setattr``, recursive),
    then private tmpfs on ``/tmp`` and ``/dev/shm``: the only writable places;
  * pid namespace: the zygote is its init, so it cannot be killed from inside and ``kill(-1)`` from it
    kills everything a program left behind; a fresh ``/proc`` shows only the namespace;
  * as root, programs run as an unprivileged uid (RLIMIT_NPROC is not enforced for root, and root could
    undo the mounts); otherwise every capability is cleared. Always ``no_new_privs`` and an empty
    capability bounding set, so no exec'd binary (``su``, ``mount``) can regain privileges.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import struct
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 1 << 12, 1 << 14, 1 << 18
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 4, 24, 38
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 0x1

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _bytes(s: str | None) -> bytes | None:
    return None if s is None else s.encode()


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    rc = _libc.mount(_bytes(source), _bytes(target), _bytes(fstype), ctypes.c_ulong(flags), _bytes(data))
    _check(rc, f"mount {target}")


def _readonly_everything() -> None:
    """Recursively mark every mount read-only (mount_setattr, Linux >= 5.12)."""
    attr = struct.pack("QQQQ", MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr: set, clr, propagation, userns
    buf = ctypes.create_string_buffer(attr, len(attr))
    rc = _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, buf, len(attr))
    _check(rc, "mount_setattr(/, RDONLY, recursive)")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def isolate(cfg: dict) -> tuple[dict, list[str]]:
    """Enter new namespaces (forking once when a pid namespace is made) and lock the filesystem down.

    Returns the isolation achieved and warnings; only the zygote returns (the pre-fork parent stays behind
    to wait for it and exits with its status).
    """
    iso = dict.fromkeys(
        ("user_ns", "net_ns", "mount_ns", "pid_ns", "fresh_proc", "readonly_root", "private_tmp", "uid_drop"),
        False,
    )
    root = os.geteuid() == 0
    iso["uid_drop"] = root  # root children switch to an unprivileged uid, namespaces or not
    if not cfg["isolate"]:
        warnings = ["namespaces disabled by configuration (isolate=False)"]
        if root and _blocking_ancestor(os.path.realpath(sys.base_prefix)):
            iso["uid_drop"] = False  # without a mount namespace the program uid could not import the stdlib
            warnings.append(f"programs run as root: {sys.base_prefix} is not readable by other users")
        return iso, warnings
    warnings: list[str] = []
    user = 0 if root else CLONE_NEWUSER
    for flags in (CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID, CLONE_NEWNET | CLONE_NEWNS, CLONE_NEWNET):
        if _libc.unshare(flags | user) == 0:
            break
        err = ctypes.get_errno()
    else:
        return iso, [f"unshare failed ({os.strerror(err)}): no network/mount/pid namespaces"]
    iso.update(
        user_ns=not root, net_ns=True, mount_ns=bool(flags & CLONE_NEWNS), pid_ns=bool(flags & CLONE_NEWPID)
    )
    if not root:
        try:  # map our own uid/gid to 0 inside: we get capabilities over the new namespaces only
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {cfg['uid']} 1")
            _write("/proc/self/gid_map", f"0 {cfg['gid']} 1")
        except OSError as e:
            warnings.append(f"user namespace id maps not written ({e})")
    if iso["pid_ns"]:
        _become_pid1()
    if iso["mount_ns"]:
        warnings += _lock_filesystem(iso, cfg)
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last_cap = int(f.read())
    except (OSError, ValueError):
        last_cap = 63
    for cap in range(last_cap + 1):  # no exec'd binary can ever regain a capability (children inherit this)
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    # not ptrace-able nor readable through /proc/1/mem by programs that share its uid (user namespace mode)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    return iso, warnings


def _become_pid1() -> None:
    """Fork the zygote into the new pid namespace; this process only waits for it.

    The waiting parent lets go of the pipes so the pool sees EOF as soon as the zygote dies.
    """
    pid = os.fork()
    if pid == 0:
        return
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _lock_filesystem(iso: dict, cfg: dict) -> list[str]:
    """Private mounts: fresh /proc, everything read-only, then writable tmpfs on /tmp and /dev/shm."""
    warnings = []
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
    except OSError as e:
        return [f"mount propagation not made private ({e}); filesystem left as is"]
    if iso["pid_ns"]:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            iso["fresh_proc"] = True
        except OSError as e:
            warnings.append(f"no fresh /proc ({e}): programs see host process ids")
    warnings += _hide_private_dirs(cfg["hidden_dirs"], iso["uid_drop"])
    try:
        _readonly_everything()
        iso["readonly_root"] = True
    except OSError as e:
        warnings.append(f"filesystem not made read-only ({e})")
    try:
        fresh_tmpfs(cfg["tmpfs_bytes"], first=True)
        iso["private_tmp"] = True
    except OSError as e:
        warnings.append(f"no private tmpfs ({e}): temp dirs live in the host's temp dir")
    return warnings


MNT_DETACH = 2


def fresh_tmpfs(size_bytes: int, first: bool = False) -> None:
    """Mount new, empty, size-capped tmpfs on ``/tmp`` and ``/dev/shm`` (multiprocessing needs a writable
    one), detaching the previous ones: cleaning up after a program costs the same whatever it left there
    (a 20,000-deep directory chain, 150,000 files), and nothing of it reaches the next program."""
    opts = f"size={size_bytes},mode=1777"
    for target in ("/tmp", "/dev/shm"):
        if target == "/dev/shm" and not os.path.isdir(target):
            continue
        if not first:
            _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount2({target})")
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, opts)


def _blocking_ancestor(path: str) -> str | None:
    """The topmost ancestor of ``path`` that users other than its owner cannot traverse."""
    parts = path.strip("/").split("/")
    for i in range(len(parts)):
        anc = "/" + "/".join(parts[:i])
        if not os.stat(anc).st_mode & 0o001:
            return anc
    return None


def _python_dirs() -> list[str]:
    """The interpreter's own directories (stdlib, venv, sys.path), nested ones dropped."""
    dirs = {sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix}
    dirs |= {p for p in sys.path if p and os.path.isdir(p)}
    return _outermost({os.path.realpath(d) for d in dirs})


def _outermost(paths: set[str]) -> list[str]:
    """``paths`` without those inside another one, sorted."""
    out: list[str] = []
    for p in sorted(paths, key=len):
        if not any(p == q or p.startswith(q + "/") for q in out):
            out.append(p)
    return sorted(out)


def _hide_private_dirs(hidden: list[str], uid_drop: bool) -> list[str]:
    """Cover ``hidden`` (home directories: keys, tokens) with empty tmpfs, keeping the interpreter reachable.

    Also covered, as root: every directory that would stop the unprivileged program uid from reaching the
    interpreter (a pyenv install under ``/root``, mode 700), or the child could not import anything the
    zygote has not already imported. The interpreter's directories inside a cover are bind-mounted back at
    their own paths. Returns warnings.
    """
    keep = _python_dirs()
    covers = {os.path.realpath(h) for h in hidden if os.path.isdir(h)}
    if uid_drop:
        covers |= {b for d in keep if (b := _blocking_ancestor(d)) is not None}
    # never cover "/" or a directory holding the interpreter's own files
    covers = {c for c in covers if c != "/" and not any(c == d or c.startswith(d + "/") for d in keep)}
    warnings = []
    for cover in _outermost(covers):
        inside = [d for d in keep if d.startswith(cover + "/")]
        try:
            fds = [(d, os.open(d, os.O_PATH | os.O_DIRECTORY)) for d in inside]  # grab them before covering
            _mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
            for d, fd in fds:
                os.makedirs(d, mode=0o755, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", d, None, MS_BIND | MS_REC)
                os.close(fd)
        except OSError as e:
            warnings.append(f"{cover} not hidden ({e})" + (": imports may fail" if inside else ""))
    return warnings


def set_limits(lim: dict, nproc: int) -> None:
    cpu = max(1, math.ceil(lim["timeout_s"]))  # SIGXCPU at the limit, SIGKILL a second later
    for res, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (lim["memory_bytes"],) * 2),
        (resource.RLIMIT_FSIZE, (lim["max_file_bytes"],) * 2),
        (resource.RLIMIT_NOFILE, (lim["max_open_files"],) * 2),
        (resource.RLIMIT_NPROC, (nproc,) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(res, value)


def set_dumpable(on: bool) -> None:
    """PR_SET_DUMPABLE: a non-dumpable process's /proc/<pid>/{mem,fd,environ} and ptrace are closed to every
    other process of its uid (inherited across fork; a uid change resets it to fs.suid_dumpable)."""
    _check(_libc.prctl(PR_SET_DUMPABLE, int(on), 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def set_no_new_privs() -> None:
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


def drop_privileges(ctx: dict) -> None:
    set_no_new_privs()
    if ctx["iso"]["uid_drop"]:
        uid = ctx["run_uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.geteuid() != uid:
            raise OSError("uid drop did not take")
    elif ctx["iso"]["user_ns"]:
        # root inside our own user namespace: clear every capability (header v3, two empty data words)
        header = struct.pack("Ii", 0x20080522, 0)
        _check(_libc.capset(header, bytes(24)), "capset(0)")


def count_tasks(uid: int) -> int:
    """Processes and threads owned by ``uid`` (RLIMIT_NPROC counts them all)."""
    n = 0
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                n += int(fields["Threads"])
        except (OSError, ValueError, KeyError):
            continue
    return n


#: namespace flags of clone(2) (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET)
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
#: syscalls a program never needs and an escape would: namespaces, mounts, tracing other processes, kernel
#: attack surface (bpf, io_uring, userfaultfd, perf, keyrings), modules and the machine itself
DENIED_SYSCALLS = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsmount", "fsconfig", "fspick", "mount_setattr", "ptrace", "process_vm_readv", "process_vm_writev",
    "bpf", "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "userfaultfd", "perf_event_open", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff", "acct",
)  # fmt: skip


PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


def seccomp_program() -> bytes | None:
    """The compiled BPF of the programs' seccomp filter (libseccomp via ``pyseccomp``), built once per worker:
    every :data:`DENIED_SYSCALLS` and clone(2) with any namespace flag fail with EPERM; clone3 fails with
    ENOSYS (its flags are out of the filter's reach; glibc then falls back to clone). ``None`` where
    libseccomp or pyseccomp is missing (the pool warns once)."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError, RuntimeError):
        return None
    import errno
    import tempfile

    f = sc.SyscallFilter(defaction=sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (ValueError, RuntimeError, OSError):  # a syscall this kernel / libseccomp does not know
            pass
    for flag in CLONE_NAMESPACE_FLAGS:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def load_seccomp(bpf: bytes) -> None:
    """Install a compiled filter in this process (needs ``no_new_privs``): one prctl, no libseccomp call."""
    if not bpf or len(bpf) % 8:
        raise OSError("malformed seccomp program")
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = struct.pack("HxxxxxxP", len(bpf) // 8, ctypes.addressof(buf))  # struct sock_fprog {u16 len; ptr}
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.c_char_p(prog), 0, 0), "prctl(SECCOMP)")


def usable_seccomp_program() -> bytes | None:
    """The programs' compiled seccomp filter, built once here (before isolation: libseccomp is found through
    /etc/ld.so.cache) and tried in a throwaway child; ``None`` where it cannot be installed."""
    try:
        bpf = seccomp_program()
    except Exception:
        return None
    if bpf is None:
        return None
    pid = os.fork()
    if pid == 0:
        try:
            set_no_new_privs()
            load_seccomp(bpf)
            os._exit(0)
        except BaseException:
            os._exit(1)
    return bpf if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 else None


def join_cgroups(procs: list[str]) -> bool:
    """Enter the slot's cgroups before anything is forked, so every process of every program is counted."""
    try:
        for p in procs:
            with open(p, "w") as f:
                f.write(str(os.getpid()))
    except OSError:
        return False
    return bool(procs)
