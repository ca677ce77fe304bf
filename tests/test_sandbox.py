"""The sandbox: hostile programs get the right verdict quickly, leave nothing behind, and the pool survives."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from rlvr.sandbox import pool as sandbox
from rlvr.sandbox.pool import Limits, SandboxPool, run_programs

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TIMEOUT = 2.0
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(2) as p:
        p.run(["pass"])  # start a worker so `isolation` is known
        yield p


def _isolated(pool: SandboxPool) -> bool:
    iso = pool.isolation
    return bool(iso.get("net_ns") and iso.get("readonly_root") and iso.get("pid_ns"))


def _tasks_of_uid(uid: int) -> int:
    n = 0
    for entry in os.listdir("/proc"):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                n += 1
    return n


def test_isolation_is_available_here(pool):
    """On Linux as root (CI) or with user namespaces, every namespace and the read-only root are in place."""
    iso = pool.isolation
    assert set(iso) >= {"net_ns", "mount_ns", "pid_ns", "readonly_root", "private_tmp", "uid_drop", "user_ns"}
    if ROOT:
        assert (
            iso["net_ns"] and iso["mount_ns"] and iso["pid_ns"] and iso["readonly_root"] and iso["uid_drop"]
        )


# (name, program, expected status, substring expected in stdout+stderr+reason)
HOSTILE = [
    ("busy_loop", "while True: pass", "timeout", "cpu time limit"),
    ("sleep", "import time; time.sleep(60)", "timeout", "wall time limit"),
    (
        "fork_bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "timeout",
        "",
    ),
    ("memory_bomb", "x = bytearray(4 << 30)", "failed", "MemoryError"),
    (
        "huge_file",
        "f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * (1 << 20))",
        "failed",
        "File too large",
    ),
    ("infinite_output", "while True:\n    print('y' * 1000)", "failed", "output limit"),
    ("close_stdout", "import os\nos.close(1)\nprint('x')", "failed", ""),
    ("exit_code", "import sys; sys.exit(3)", "failed", "exit code 3"),
    ("exception", "raise ValueError('boom')", "failed", "ValueError: boom"),
    ("stdin_is_devnull", "input()", "failed", "EOFError"),
    (
        "connect_1111",
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
        "failed",
        "Error",
    ),
    ("segfault", "import ctypes; ctypes.string_at(0)", "failed", "signal 11"),
]


@pytest.fixture(scope="module")
def hostile_results(pool):
    start = time.monotonic()
    results = pool.run([src for _, src, _, _ in HOSTILE], HOSTILE_LIMITS)
    return dict(zip([h[0] for h in HOSTILE], results)), time.monotonic() - start


# CPU limit TIMEOUT; a tight wall backstop (TIMEOUT + 1 s) for the programs that wait instead of computing
HOSTILE_LIMITS = Limits(timeout_s=TIMEOUT, wall_factor=1.0, wall_extra_s=1.0)


@pytest.mark.parametrize(
    "name,expected,needle", [(h[0], h[2], h[3]) for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_program_verdict(hostile_results, name, expected, needle):
    results, _ = hostile_results
    r = results[name]
    assert r.status == expected, r
    assert needle in r.stdout + r.stderr + r.reason, r
    assert r.duration_s < TIMEOUT + 1.0 + 1.5, r  # killed promptly, never hangs
    assert (
        len(r.stdout) <= Limits().max_output_bytes + 100 and len(r.stderr) <= Limits().max_output_bytes + 100
    )


def test_memory_creep_hits_the_address_space_limit(pool):
    # a small limit: touching a GiB of fresh pages takes seconds on some VMs, which is not what we test
    src = "x = []\nwhile True:\n    x.append(bytearray(16 << 20))"
    r = pool.run([src], Limits(timeout_s=10, memory_bytes=256 << 20))[0]
    assert r.status == "failed" and "MemoryError" in r.stderr and r.duration_s < 5, r


def test_hostile_batch_is_quick_and_pool_survives(pool, hostile_results):
    _, elapsed = hostile_results
    # 12 programs, 3 of them run into the 2 s timeout, on 2 workers
    assert elapsed < 4 * TIMEOUT + 6
    assert [r.status for r in pool.run(["print(6 * 7)"] * 4)] == ["passed"] * 4


def test_nothing_survives_a_program(pool):
    if not (ROOT and _isolated(pool)):
        pytest.skip("needs root + pid namespace to observe leftovers by uid")
    escape = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "print('parent done')"
    )
    results = pool.run([escape, HOSTILE[2][1]], timeout_s=1.0)
    assert results[0].status == "passed" and results[1].status == "timeout"
    time.sleep(0.2)
    assert _tasks_of_uid(64000) + _tasks_of_uid(64001) == 0


def test_loopback_server_of_the_host_is_unreachable(pool):
    if not pool.isolation.get("net_ns"):
        pytest.skip("no network namespace on this machine")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        src = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('CONNECTED')"
        r = pool.run([src])[0]
    finally:
        server.close()
    assert r.status == "failed" and "CONNECTED" not in r.stdout
    assert "Network is unreachable" in r.stderr or "Connection refused" in r.stderr


def test_cannot_touch_the_project(pool):
    if not pool.isolation.get("readonly_root"):
        pytest.skip("no read-only mount namespace on this machine")
    canary = REPO / f".sandbox-canary-{uuid.uuid4().hex}"
    canary.write_text("alive")
    intruder = REPO / f".sandbox-intruder-{uuid.uuid4().hex}"
    try:
        src = (
            "import os, shutil\n"
            f"os.system('rm -rf {canary} {REPO}/tests/conftest.py')\n"
            f"for f in (lambda: os.remove({str(canary)!r}), lambda: open({str(canary)!r}, 'w'),\n"
            f"          lambda: open({str(intruder)!r}, 'w'), lambda: shutil.rmtree({str(REPO / 'src')!r})):\n"
            "    try:\n        f()\n    except OSError as e:\n        print('blocked', type(e).__name__)\n"
        )
        r = pool.run([src])[0]
        assert canary.read_text() == "alive" and not intruder.exists()
        assert (REPO / "tests" / "conftest.py").is_file() and (REPO / "src" / "rlvr").is_dir()
        assert r.stdout.count("blocked") == 4, r
    finally:
        canary.unlink(missing_ok=True)
        intruder.unlink(missing_ok=True)


def test_home_directories_are_hidden(pool):
    if not pool.isolation.get("mount_ns"):
        pytest.skip("no mount namespace on this machine")
    dirs = [d for d in ("/root", "/home", os.path.expanduser("~")) if os.path.isdir(d)]
    r = pool.run([f"import os, json\nprint(json.dumps([os.listdir(d) for d in {dirs!r}]))"])[0]
    visible = {name for listing in json.loads(r.stdout) for name in listing}
    # only the way to the interpreter (e.g. /root/.pyenv for a pyenv install) may remain
    allowed = {
        Path(p).relative_to(d).parts[0]
        for d in dirs
        for p in (sys.base_prefix, sys.prefix)
        if p.startswith(d + "/")
    }
    assert r.status == "passed" and visible <= allowed, (visible, allowed)


def test_environment_cwd_and_tempdir(pool, monkeypatch):
    src = (
        "import os, json\n"
        "open('scratch.txt', 'w').write('x')\n"
        "print(json.dumps({'env': sorted(os.environ), 'cwd': os.getcwd(), 'uid': os.getuid(),\n"
        "                  'files': os.listdir('.')}))"
    )
    first = json.loads(pool.run([src])[0].stdout)
    assert set(first["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG"}
    assert first["files"] == ["scratch.txt"]
    if ROOT:
        assert first["uid"] != 0
    # each program gets a fresh temp dir, and the previous one is gone
    check = f"import os; print(os.path.exists({first['cwd']!r}), os.listdir('.'))"
    assert pool.run([check])[0].stdout.strip() == "False []"


def test_nothing_in_tmp_reaches_the_next_program(pool):
    if not pool.isolation.get("private_tmp"):
        pytest.skip("no private /tmp on this machine")
    writer = "open('/tmp/leak', 'w').write('x')\nopen('/dev/shm/leak', 'w').write('x')"
    assert pool.run([writer])[0].status == "passed"
    reader = "import os\nprint(os.listdir('/tmp'), os.listdir('/dev/shm'))"
    out = [r.stdout for r in pool.run([reader] * 2)]  # whichever worker runs it
    assert all("leak" not in o for o in out), out


def test_output_is_capped_head_and_tail(pool):
    src = "import sys\nsys.stdout.write('A' * 200_000)\nprint()\nprint('THE END')"
    r = pool.run([src], Limits(max_output_bytes=4096))[0]
    assert r.status == "passed" and r.truncated
    assert r.stdout.startswith("A" * 2000) and r.stdout.rstrip().endswith("THE END")
    assert "bytes truncated" in r.stdout and len(r.stdout) < 4200


def test_program_killing_its_parent_does_not_break_the_pool(pool):
    r = pool.run(["import os\nos.kill(os.getppid(), 9)\nprint('still here')"])[0]
    assert r.status in ("passed", "failed")  # ignored (pid-namespace init) or EPERM (other uid)
    assert pool.run(["print('ok')"])[0].stdout == "ok\n"


def test_batch_overlaps_and_is_callable_from_threads(pool):
    start = time.monotonic()
    results = pool.run(["import time; time.sleep(0.5); print('z')"] * 4)
    assert time.monotonic() - start < 1.9  # 2 workers: 2 rounds of 0.5 s, not 4
    assert all(r.stdout == "z\n" for r in results)
    outs: dict[int, list[str]] = {}

    def worker(k: int) -> None:
        outs[k] = [r.stdout for r in run_programs([f"print({k} * {j})" for j in range(5)], pool=pool)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert outs == {k: [f"{k * j}\n" for j in range(5)] for k in range(4)}


def test_dead_worker_is_replaced():
    with SandboxPool(1) as p:
        assert p.run(["print(1)"])[0].status == "passed"
        proc = p._all[0].proc
        os.killpg(proc.pid, 9)
        proc.wait()
        assert p.run(["print(2)"])[0].stdout == "2\n"


def test_hung_worker_gives_an_error_and_is_replaced(monkeypatch):
    monkeypatch.setattr(sandbox, "_GRACE_S", 0.5)
    with SandboxPool(1) as p:
        assert p.run(["print(1)"])[0].status == "passed"
        os.killpg(p._all[0].proc.pid, signal.SIGSTOP)  # the worker stops answering
        start = time.monotonic()
        r = p.run(["print(2)"], timeout_s=0.5)[0]
        assert r.status == "error" and "did not answer" in r.reason and time.monotonic() - start < 5
        assert p.run(["print(3)"])[0].stdout == "3\n"


def test_large_program_and_output_round_trip(pool):
    src = f"x = {'a' * 3_000_000!r}\nprint(len(x))"
    assert pool.run([src])[0].stdout == "3000000\n"


def test_degraded_isolation_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(sandbox, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="rlvr.sandbox.pool"):
        with SandboxPool(2, isolate=False) as p:
            results = p.run(["print('a')", "print('b')", "import time; time.sleep(0.2)"])
    assert [r.status for r in results] == ["passed"] * 3
    warnings = [rec for rec in caplog.records if "SANDBOX ISOLATION DEGRADED" in rec.message]
    assert len(warnings) == 1 and "NO network isolation" in warnings[0].message


def test_closed_pool_refuses():
    p = SandboxPool(1)
    p.close()
    with pytest.raises(RuntimeError):
        p.run(["pass"])


def _python_for_other_users() -> str | None:
    """A Python >= 3.10 that an unprivileged user can run (pyenv installs under /root are not)."""
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(cand):
            out = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", cand, "-c",
                 "import sys; print(sys.version_info >= (3, 10))"],
                capture_output=True, text=True,
            )  # fmt: skip
            if out.stdout.strip() == "True":
                return cand
    return None


@pytest.mark.skipif(not ROOT or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_isolation_as_an_unprivileged_user():
    """The same guarantees without root: a user namespace first, then network/mount/pid namespaces."""
    python = _python_for_other_users()
    if python is None:
        pytest.skip("no Python runnable by an unprivileged user")
    closed = [str(p) for p in (REPO / "src", *REPO.parents) if not p.stat().st_mode & 0o001]
    if closed:  # e.g. a clone inside a `mktemp -d` folder (mode 700): the other user cannot import rlvr
        pytest.skip(f"the checkout is not reachable by other users ({closed[0]} is not o+x)")
    programs = [
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
        f"open({str(REPO / 'intruder')!r}, 'w')",
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])",
        "while True: pass",
    ]
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO / 'src')!r})\n"
        "from rlvr.sandbox.pool import SandboxPool\n"
        "with SandboxPool(1) as p:\n"
        "    r = p.run(json.loads(sys.argv[1]), timeout_s=1)\n"
        "    print(json.dumps({'iso': p.isolation, 'r': [[x.status, x.stdout, x.stderr[-200:]] for x in r]}))\n"
    )
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", script, json.dumps(programs)],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    if not res["iso"]["user_ns"]:
        pytest.skip(f"user namespaces unavailable to unprivileged users here: {res['iso']}")
    assert res["iso"]["net_ns"] and res["iso"]["readonly_root"] and res["iso"]["pid_ns"]
    (net, write, caps, loop) = res["r"]
    assert net[0] == "failed" and "unreachable" in net[2]
    # read-only mount, or (a checkout under /tmp) hidden behind the sandbox's private /tmp
    blocked = ("Read-only file system", "Permission denied", "No such file or directory")
    assert write[0] == "failed" and any(b in write[2] for b in blocked), write
    assert not (REPO / "intruder").exists()
    assert int(caps[1].strip(), 16) == 0  # root of its user namespace, but with no capability left
    assert loop[0] == "timeout"
    assert not (REPO / "intruder").exists()


def test_worker_uses_current_interpreter():
    # the worker must be the trainer's own interpreter (same stdlib, same site-packages)
    with SandboxPool(1) as p:
        r = p.run(["import sys; print(sys.executable, sys.version_info[:2])"])[0]
    assert r.stdout.split()[0] == sys.executable


def test_cpu_time_decides_timeouts_on_a_busy_machine(pool):
    """A program needing 1.5 s of CPU passes a 2 s limit while three busy loops (each its own session, so the
    scheduler shares the cores evenly) compete for the two cores: it takes well over 2 s of wall time, which a
    wall-clock limit would have called a timeout. One needing 4 s of CPU still times out."""
    probe = "import time\nt = time.process_time()\nn = 0\nwhile time.process_time() - t < {s}:\n    n += 1\nprint('done')"
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(3)
    ]
    try:
        time.sleep(0.5)
        ok, slow = pool.run([probe.format(s=1.5), probe.format(s=4.0)], Limits(timeout_s=2.0))
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert ok.status == "passed" and "done" in ok.stdout and ok.duration_s > 2.0, ok
    assert slow.status == "timeout" and "cpu time limit" in slow.reason, slow


def test_a_worker_survives_a_program_that_buries_its_temp_dir(pool):
    """A 20,000-deep directory chain and 150,000 files: cleanup is a fresh tmpfs (no recursion in Python),
    and the next 16 programs all pass on a clean /tmp."""
    bury = (
        "import os\n"
        "for i in range(150_000):\n"
        "    open(f'f{i}', 'w').close()\n"
        "for _ in range(20_000):\n"
        "    os.mkdir('d')\n"
        "    os.chdir('d')\n"
        "print('buried')\n"
    )
    (buried,) = pool.run([bury], Limits(timeout_s=20))
    assert buried.status == "passed" and "buried" in buried.stdout, buried
    probe = "import os\nprint(os.listdir('/tmp') == [os.path.basename(os.getcwd())])"
    after = pool.run([probe] * 16, timeout_s=5)
    assert [r.status for r in after] == ["passed"] * 16, after
    if pool.isolation.get("private_tmp"):
        assert all(r.stdout.strip() == "True" for r in after), [r.stdout for r in after]


def test_memory_budget_holds_for_the_whole_program(pool):
    """Six processes of 400 MiB each stay under RLIMIT_AS one by one; the slot's cgroup (memory of all the
    program's processes together, 1 GiB by default) stops them, and the next program runs normally."""
    if not pool._all[0].info.get("cgroup"):
        pytest.skip("no writable cgroup here (needs root and a cgroup v1 memory+pids or a v2 hierarchy)")
    bomb = (
        "import os, time\n"
        "for i in range(6):\n"
        "    if os.fork() == 0:\n"
        "        b = bytearray(400 << 20)\n"
        "        for j in range(0, len(b), 4096):\n"
        "            b[j] = 1\n"
        "        time.sleep(3)\n"
        "        os._exit(0)\n"
        "for _ in range(6):\n"
        "    os.wait()\n"
    )
    r = pool.run([bomb], Limits(timeout_s=10))[0]
    assert r.status == "failed" and "memory limit" in r.reason, r
    assert pool.run(["print(sum(range(10)))"])[0].stdout.strip() == "45"


SYSCALLS = {  # name -> x86-64 number, args
    "unshare(CLONE_NEWUSER)": (272, (0x10000000,)),
    "unshare(CLONE_NEWNET)": (272, (0x40000000,)),
    "clone(CLONE_NEWUSER)": (56, (0x10000000 | 17, 0, 0, 0, 0)),
    "setns": (308, (0, 0)),
    "mount": (165, (0, 0, 0, 0, 0)),
    "chroot": (161, (0,)),
    "ptrace": (101, (0, 0, 0, 0)),
    "process_vm_readv": (310, (1, 0, 0, 0, 0, 0)),
    "bpf": (321, (0, 0, 0)),
    "keyctl": (250, (0, 0, 0, 0, 0)),
    "io_uring_setup": (425, (1, 0)),
    "userfaultfd": (323, (0,)),
    "perf_event_open": (298, (0, 0, -1, -1, 0)),
}


def test_seccomp_denies_namespaces_mounts_tracing_and_kernel_surface(pool):
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("syscall numbers below are x86-64's")
    if not pool.isolation.get("seccomp"):
        pytest.skip("no seccomp here (pyseccomp or libseccomp missing)")
    template = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "rc = libc.syscall({nr}, *[ctypes.c_long(a) for a in {args}])\nprint(rc, ctypes.get_errno())"
    )
    programs = [template.format(nr=nr, args=args) for nr, args in SYSCALLS.values()]
    ordinary = "import os, threading\nt = threading.Thread(target=print, args=('thread',))\nt.start(); t.join()\n" \
               "pid = os.fork()\nif pid == 0:\n    os._exit(7)\nprint(os.waitpid(pid, 0)[1] >> 8)"  # fmt: skip
    *denied, ok = pool.run([*programs, ordinary], timeout_s=5)
    for name, r in zip(SYSCALLS, denied):
        assert r.status == "passed" and r.stdout.split() == ["-1", "1"], (name, r)  # -1, EPERM
    assert ok.status == "passed" and ok.stdout.split() == ["thread", "7"], ok


def test_a_program_sees_only_the_interpreter_and_its_temp_dir(pool, tmp_path):
    """No host configuration or state, no homes, no project or data folders, no host unix sockets."""
    if not (pool.isolation.get("mount_ns") and pool.isolation.get("readonly_root")):
        pytest.skip("no mount namespace here")
    import socket

    sock_dir = REPO / f".sandbox-test-{os.getpid()}"
    sock_dir.mkdir()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_dir / "s"))
    server.listen(1)
    probe = (
        "import os, socket\n"
        "for d in ('/etc', '/var', '/run', '/opt', '/srv', '/home'):\n"
        "    print(d, os.path.isdir(d) and os.listdir(d))\n"
        f"print('data', os.path.exists({str(SHARED_DATA)!r}), 'tests', os.path.exists({str(REPO / 'tests')!r}))\n"
        "c = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    c.connect({str(sock_dir / 's')!r}); print('connected')\n"
        "except OSError as e:\n"
        "    print('refused', type(e).__name__)\n"
        "import json, decimal, sqlite3\nprint('stdlib ok')\n"
    )
    try:
        r = pool.run([probe], timeout_s=5)[0]
    finally:
        server.close()
        (sock_dir / "s").unlink()
        sock_dir.rmdir()
    lines = r.stdout.splitlines()
    assert r.status == "passed", r
    assert all(ln.endswith((" []", " False")) for ln in lines[:6]), lines  # empty (or absent on this host)
    assert (
        lines[6] == "data False tests False" and lines[7].startswith("refused") and lines[8] == "stdlib ok"
    ), lines


def test_cpu_budget_holds_for_the_whole_program(pool):
    """Four forked busy loops stay under RLIMIT_CPU one by one (2 s each, 8 s in all); the slot's CPU budget
    (timeout_s for all the program's processes) stops the program at about 2 s of CPU."""
    if not pool._all[0].config.get("cpu_usage"):
        pytest.skip("no cpuacct / cpu.stat in a writable cgroup here")
    spin = (
        "import os, time\n"
        "for _ in range(4):\n"
        "    if os.fork() == 0:\n"
        "        t = time.process_time()\n"
        "        while time.process_time() - t < 1.8:\n"
        "            pass\n"
        "        os._exit(0)\n"
        "for _ in range(4):\n"
        "    os.wait()\n"
        "print('all children done')\n"
    )
    r = pool.run([spin], Limits(timeout_s=2.0))[0]
    assert r.status == "timeout" and "all the program's processes" in r.reason, r
    assert "all children done" not in r.stdout
