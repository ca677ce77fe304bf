"""Plain-data calls between a candidate process and its tester: the runtime of paired programs.

Stdlib only; the sandbox worker loads it by path and preloads it as the module ``rlvr_paired`` (compiled once
per worker, free in every program). A paired candidate program is ``rlvr_paired.serve(source, setup)``: it
runs the source as a module and answers calls (a name or a handle, arguments as plain data) on fds 3 (in) and
4 (out). A tester program is ``rlvr_paired.run_tests(proxies, setup, units, nonce)``: proxies stand for the
candidate's names, each unit runs and is reported as ``<nonce> <i> P|F|E`` on stdout, then ``<nonce> END``.

Plain data is exact builtin types only (see :func:`_enc`); anything else stays in the candidate process as a
handle the tester can call, read or set attributes of, ask for its truth value, or pass back, but never
compare, hash, measure or iterate. The codec is the trust boundary: the tester rebuilds values with
:func:`_dec` from JSON and never runs candidate code. What each side may see is arranged by the worker (the
candidate is forked before the tester's program arrives; both are non-dumpable).
"""

import builtins as _b
import collections as _collections
import json as _json
import os as _os
import struct as _struct
import sys as _sys

_MAX_MSG = 64 << 20
_MAX_NODES = 1_000_000
# the stdlib's dict flavours compare as dicts (Counter == {...}): sent as plain dicts (MBPP solutions use them)
_DICTS = (_b.dict, _collections.Counter, _collections.OrderedDict, _collections.defaultdict)
# builtin classes passed as values (``remove_datatype(xs, int)``), by name
_TYPES = {
    t.__name__: t
    for t in (
        _b.int,
        _b.float,
        _b.complex,
        _b.str,
        _b.bytes,
        _b.bool,
        _b.list,
        _b.tuple,
        _b.dict,
        _b.set,
        _b.frozenset,
        _b.type(None),
    )
}


class _Unplain(Exception):
    pass


def _enc(x, handles, budget):
    budget[0] -= 1
    if budget[0] < 0:
        raise _Unplain("value too large")
    t = _b.type(x)
    if x is None:
        return ["N"]
    if t is _b.type and _TYPES.get(x.__name__) is x:
        return ["K", x.__name__]
    if t is _b.bool:
        return ["B", x]
    if t is _b.int:
        return ["I", _b.format(x, "x")]
    if t is _b.float:
        return ["F", x.hex()]
    if t is _b.complex:
        return ["C", x.real.hex(), x.imag.hex()]
    if t is _b.str:
        return ["S", x]
    if t is _b.bytes:
        return ["Y", x.hex()]
    if t in (_b.list, _b.tuple, _b.set, _b.frozenset):
        tag = {_b.list: "L", _b.tuple: "T", _b.set: "E", _b.frozenset: "Z"}[t]
        return [tag, [_enc(v, handles, budget) for v in x]]
    if t in _DICTS:
        return ["D", [[_enc(k, handles, budget), _enc(v, handles, budget)] for k, v in _b.dict.items(x)]]
    if handles is None:
        raise _Unplain("not plain data: " + t.__name__)
    handles.append(x)
    return ["H", _b.len(handles) - 1]


def _dec(v, resolve):
    tag = v[0]
    if tag == "N":
        return None
    if tag == "B":
        if _b.type(v[1]) is not _b.bool:
            raise _Unplain("bad bool")
        return v[1]
    if tag == "I":
        return _b.int(v[1], 16)
    if tag == "F":
        return _b.float.fromhex(v[1])
    if tag == "C":
        return _b.complex(_b.float.fromhex(v[1]), _b.float.fromhex(v[2]))
    if tag == "S":
        if _b.type(v[1]) is not _b.str:
            raise _Unplain("bad str")
        return v[1]
    if tag == "Y":
        return _b.bytes.fromhex(v[1])
    if tag in ("L", "T", "E", "Z"):
        items = [_dec(i, resolve) for i in v[1]]
        return {"L": _b.list, "T": _b.tuple, "E": _b.set, "Z": _b.frozenset}[tag](items)
    if tag == "D":
        return {_dec(k, resolve): _dec(x, resolve) for k, x in v[1]}
    if tag == "H":
        return resolve(_b.int(v[1]))
    if tag == "K":
        return _TYPES[v[1]]
    raise _Unplain("bad tag")


def _send(fd, msg):
    data = _json.dumps(msg).encode("utf-8", "surrogatepass")
    data = _struct.pack(">I", _b.len(data)) + data
    while data:
        data = data[_os.write(fd, data) :]


def _recv(fd):
    def exactly(n):
        buf = b""
        while _b.len(buf) < n:
            chunk = _os.read(fd, n - _b.len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    head = exactly(4)
    if head is None:
        return None
    n = _struct.unpack(">I", head)[0]
    if n > _MAX_MSG:
        raise _Unplain("message too large")
    body = exactly(n)
    return None if body is None else _json.loads(body.decode("utf-8", "surrogatepass"))


def _why(e):
    try:
        return f"{_b.type(e).__name__}: {e}"[:300]
    except _b.BaseException:
        return "exception"


def serve(candidate, setup):
    """The candidate side: load ``candidate`` (as module ``__candidate__``, so its demo block does not run)
    and ``setup``, then answer calls until the tester hangs up."""
    _handles = []
    _ns = {"__name__": "__candidate__", "__builtins__": _b}
    try:
        _b.exec(_b.compile(candidate, "<candidate>", "exec"), _ns)
        _b.exec(_b.compile(setup, "<setup>", "exec"), _ns)
        _load_error = None
    except _b.BaseException as e:
        _load_error = _why(e)

    def _target(ref):
        if ref[0] == "name":
            return _ns[ref[1]]
        return _handles[_b.int(ref[1])]

    def _resolve(i):
        return _handles[i]

    while True:
        try:
            _req = _recv(3)
        except _b.BaseException:
            break
        if _req is None:
            break
        try:
            if _load_error is not None:
                raise RuntimeError("candidate failed to load: " + _load_error)
            _obj = _target(_req["target"])
            if _req["op"] == "getattr":
                _out = _b.getattr(_obj, _req["attr"])
            elif _req["op"] == "bool":
                _out = _b.bool(_obj)
            elif _req["op"] == "setattr":
                _out = _b.setattr(_obj, _req["attr"], _dec(_req["value"], _resolve))
            else:
                _args = [_dec(a, _resolve) for a in _req["args"]]
                _kw = {k: _dec(a, _resolve) for k, a in _req["kwargs"]}
                _out = _obj(*_args, **_kw)
            _reply = {"value": _enc(_out, _handles, [_MAX_NODES])}
        except _b.BaseException as e:
            _reply = {"error": _why(e)}
        try:
            _send(4, _reply)
        except _b.BaseException:
            break


class _CandidateError(Exception):
    pass


def _call(msg):
    try:
        _send(4, msg)
        reply = _recv(3)
    except (OSError, ValueError, _Unplain) as e:
        raise _CandidateError(f"candidate process unreachable: {e}") from None
    if reply is None:
        raise _CandidateError("candidate process exited")
    if "error" in reply:
        raise _CandidateError(_b.str(reply["error"])[:300])
    return _dec(reply["value"], _Handle)


def _wire(x):
    if _b.type(x) is _Handle:
        return ["H", _b.object.__getattribute__(x, "_id")]
    if _b.type(x) in (_b.list, _b.tuple, _b.set, _b.frozenset):
        tag = {_b.list: "L", _b.tuple: "T", _b.set: "E", _b.frozenset: "Z"}[_b.type(x)]
        return [tag, [_wire(v) for v in x]]
    if _b.type(x) in _DICTS:
        return ["D", [[_wire(k), _wire(v)] for k, v in _b.dict.items(x)]]
    return _enc(x, None, [_MAX_NODES])


def _invoke(target, args, kwargs):
    return _call(
        {
            "op": "call",
            "target": target,
            "args": [_wire(a) for a in args],
            "kwargs": [[k, _wire(v)] for k, v in kwargs.items()],
        }
    )


class _Remote:
    def __init__(self, name):
        self._name = name

    def __call__(self, *args, **kwargs):
        return _invoke(["name", self._name], args, kwargs)

    def __repr__(self):
        return f"<candidate {self._name}>"


class _Handle:
    __slots__ = ("_id",)

    def __init__(self, i):
        _b.object.__setattr__(self, "_id", i)

    def __call__(self, *args, **kwargs):
        return _invoke(["handle", _b.object.__getattribute__(self, "_id")], args, kwargs)

    def __getattr__(self, attr):
        return _call(
            {"op": "getattr", "target": ["handle", _b.object.__getattribute__(self, "_id")], "attr": attr}
        )

    def __setattr__(self, attr, value):
        _call(
            {
                "op": "setattr",
                "target": ["handle", _b.object.__getattribute__(self, "_id")],
                "attr": attr,
                "value": _wire(value),
            }
        )

    def __bool__(self):  # the candidate's own truth value: no more than returning True or False itself
        value = _call({"op": "bool", "target": ["handle", _b.object.__getattribute__(self, "_id")]})
        if _b.type(value) is not _b.bool:
            raise TypeError("truth value of a candidate object is not a bool")
        return value

    def _refuse(self, *a, **k):
        raise TypeError("the candidate returned an object that is not plain data")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __len__ = __iter__ = __hash__ = _refuse
    __contains__ = __index__ = __int__ = __float__ = __str__ = __format__ = _refuse

    def __repr__(self):
        return "<candidate object>"


def run_tests(proxies, test_setup, units, nonce):
    """The tester side: proxies ``[(alias, candidate name)]`` in a fresh namespace, ``test_setup``, then each
    unit, reported on stdout."""
    _sys.setrecursionlimit(10000)
    _tns = {"__name__": "__main__", "__builtins__": _b}
    for _alias, _name in proxies:
        _tns[_alias] = _Remote(_name)
    _setup_error = None
    try:
        _b.exec(_b.compile(test_setup, "<test setup>", "exec"), _tns)
    except _b.BaseException as e:
        _setup_error = _why(e)
    for _alias, _name in proxies:  # setup code (a HumanEval prompt's helpers) never replaces a proxy
        _tns[_alias] = _Remote(_name)

    def _report(line):
        _os.write(1, ("\n" + nonce + " " + line + "\n").encode())

    for _i, _src in _b.enumerate(units):
        if _setup_error is not None:
            outcome, why = "E", "test setup failed: " + _setup_error
        else:
            try:
                _b.exec(_b.compile(_src, f"<test {_i}>", "exec"), _tns)
                outcome, why = "P", ""
            except AssertionError as e:
                outcome, why = "F", _why(e)
            except _b.BaseException as e:
                outcome, why = "E", _why(e)
        if why:
            _os.write(2, (f"test {_i}: {why}\n").encode("utf-8", "replace"))
        _report(f"{_i} {outcome}")
    _report("END")
