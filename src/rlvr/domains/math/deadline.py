"""A wall-clock deadline for pure-Python work in any thread, for verifiers that call libraries (sympy via
math-verify) whose worst cases cannot be bounded up front."""

from __future__ import annotations

import ctypes
import platform
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Deadline(BaseException):
    """Raised into a running comparison at its deadline; a BaseException so that math-verify's and sympy's
    ``except Exception`` blocks cannot swallow it and carry on."""


def _raise_in_thread(thread_id: int, exc: type[BaseException] | None) -> None:
    # CPython delivers the exception at the thread's next bytecode boundary; None clears a pending one.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None
    )


_REFIRE_S = 0.05


def run_with_deadline(fn: Callable[[], T], seconds: float) -> T | None:
    """``fn()``, or ``None`` when it runs past ``seconds``; works in any thread.

    A watchdog thread raises :class:`_Deadline` into the calling thread (``PyThreadState_SetAsyncExc``), so
    unlike ``signal.alarm`` (what math-verify's own timeouts use) it needs neither the main thread nor
    SIGALRM. The exception lands wherever the thread is at its next bytecode boundary; when that is a
    ``__del__`` or a weakref callback run by the garbage collector, Python prints and drops it, so the
    watchdog raises it again every ``_REFIRE_S`` for as long as ``fn``'s frame is on the thread's stack, and
    never once it has left. Like a signal it cannot stop one long C call (a huge integer power):
    :func:`rlvr.domains.math.verify.too_risky` keeps those out. On interpreters other than CPython ``fn()`` runs unbounded.
    """
    if platform.python_implementation() != "CPython":
        return fn()
    thread_id, lock, left = threading.get_ident(), threading.Lock(), threading.Event()
    marker: list[Any] = []  # the frame of `inside` while fn runs

    def inside() -> T:
        marker.append(sys._getframe())
        return fn()

    def in_fn() -> bool:
        frame = sys._current_frames().get(thread_id)
        while frame is not None and marker:
            if frame is marker[0]:
                return True
            frame = frame.f_back
        return False

    def watchdog() -> None:
        wait = seconds
        while not left.wait(wait):
            with lock:
                if left.is_set():
                    return
                if in_fn():
                    _raise_in_thread(thread_id, _Deadline)
            wait = _REFIRE_S

    box: list[T] = []
    error: list[BaseException] = []
    threading.Thread(target=watchdog, daemon=True).start()
    try:
        box.append(inside())
    except _Deadline:
        pass
    except BaseException as e:  # fn's own error, raised once the watchdog is stopped
        error.append(e)
    # fn has left, so nothing new is raised; one raised just before may still be pending or land here.
    while True:
        try:
            with lock:
                left.set()
                _raise_in_thread(thread_id, None)
            break
        except _Deadline:
            pass
    marker.clear()
    if error:
        raise error[0]
    return box[0] if box else None
