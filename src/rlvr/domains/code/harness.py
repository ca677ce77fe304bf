"""The two programs that judge one code completion: the candidate's and the tester's.

The candidate process runs the completion and serves calls: it receives a function name (or a handle) and
arguments as plain data, calls, and answers with the result as plain data. The tester process runs the
tests (MBPP asserts, HumanEval's ``check``) with every candidate-defined name replaced by a proxy that makes
such a call. So

* the candidate process never holds the tests or the expected values (it is forked before the tester's
  program reaches the sandbox worker, see :mod:`rlvr.sandbox.worker`), and cannot read the tester's memory
  or descriptors (both are non-dumpable);
* the tester never executes candidate code: it only decodes plain data. A result is rebuilt only from exact
  builtin types (``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``None``, builtin classes
  such as ``int`` given as values, and lists, tuples, dicts, sets, frozensets of them; the stdlib's
  ``Counter`` / ``OrderedDict`` / ``defaultdict`` travel as plain dicts). Any other object stays in the
  candidate process and comes back as an opaque handle, which can be called, have attributes read or set,
  give its truth value (no more than the candidate returning ``True``/``False`` itself) or be passed back as
  an argument, but refuses comparison (which would hand the expected value to the candidate), hashing,
  length and iteration. So an ``__eq__`` that is always true, a patched builtin or an early ``exit(0)`` in
  the candidate can only make a test fail;
* the verdict is the tester's report on its stdout, which the candidate process has no descriptor for.

Wire format, both directions: 4-byte big-endian length + JSON; a value is a tagged list (``_enc``/``_dec``).
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Sequence

# Shared by both programs: the codec of plain values. Kept free of anything the candidate could have
# replaced in the tester (the tester never runs candidate code, but the same text runs in both).
_CODEC = r"""
import builtins as _b, collections as _collections, json as _json, os as _os, struct as _struct
_MAX_MSG = 64 << 20
_MAX_NODES = 1_000_000
# the stdlib's dict flavours compare as dicts (Counter == {...}): sent as plain dicts (MBPP solutions use them)
_DICTS = (_b.dict, _collections.Counter, _collections.OrderedDict, _collections.defaultdict)
# builtin classes passed as values (``remove_datatype(xs, int)``), by name
_TYPES = {t.__name__: t for t in (_b.int, _b.float, _b.complex, _b.str, _b.bytes, _b.bool, _b.list, _b.tuple,
                                  _b.dict, _b.set, _b.frozenset, _b.type(None))}
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
        data = data[_os.write(fd, data):]
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
        return ("%s: %s" % (_b.type(e).__name__, e))[:300]
    except _b.BaseException:
        return "exception"
"""

# The candidate process: load the completion (as a module, not __main__: its demo block must not run), then
# serve calls until the tester hangs up. In both programs fd 3 reads from the other one and fd 4 writes to it.
_CANDIDATE = r"""
_handles = []
_ns = {"__name__": "__candidate__", "__builtins__": _b}
try:
    _b.exec(_b.compile(__RLVR_CANDIDATE__, "<candidate>", "exec"), _ns)
    _b.exec(_b.compile(__RLVR_SETUP__, "<setup>", "exec"), _ns)
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
"""

# The tester process: proxies for the candidate's names, then every test unit, each reported as
# "<nonce> <i> P|F|E" and finally "<nonce> END" on stdout.
_TESTER = r"""
import sys as _sys
class _CandidateError(Exception):
    pass
def _call(msg):
    try:
        _send(4, msg)
        reply = _recv(3)
    except (OSError, ValueError, _Unplain) as e:
        raise _CandidateError("candidate process unreachable: %s" % e)
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
    return _call({"op": "call", "target": target, "args": [_wire(a) for a in args],
                  "kwargs": [[k, _wire(v)] for k, v in kwargs.items()]})
class _Remote:
    def __init__(self, name):
        self._name = name
    def __call__(self, *args, **kwargs):
        return _invoke(["name", self._name], args, kwargs)
    def __repr__(self):
        return "<candidate %s>" % self._name
class _Handle:
    __slots__ = ("_id",)
    def __init__(self, i):
        _b.object.__setattr__(self, "_id", i)
    def __call__(self, *args, **kwargs):
        return _invoke(["handle", _b.object.__getattribute__(self, "_id")], args, kwargs)
    def __getattr__(self, attr):
        return _call({"op": "getattr", "target": ["handle", _b.object.__getattribute__(self, "_id")], "attr": attr})
    def __setattr__(self, attr, value):
        _call({"op": "setattr", "target": ["handle", _b.object.__getattribute__(self, "_id")], "attr": attr,
               "value": _wire(value)})
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
_sys.setrecursionlimit(10000)
_tns = {"__name__": "__main__", "__builtins__": _b}
for _alias, _name in __RLVR_PROXIES__:
    _tns[_alias] = _Remote(_name)
_setup_error = None
try:
    _b.exec(_b.compile(__RLVR_TEST_SETUP__, "<test setup>", "exec"), _tns)
except _b.BaseException as e:
    _setup_error = _why(e)
for _alias, _name in __RLVR_PROXIES__:  # setup code (a HumanEval prompt's helpers) never replaces a proxy
    _tns[_alias] = _Remote(_name)
def _report(line):
    _os.write(1, ("\n__RLVR_NONCE__ " + line + "\n").encode())
for _i, _src in _b.enumerate(__RLVR_UNITS__):
    if _setup_error is not None:
        outcome, why = "E", "test setup failed: " + _setup_error
    else:
        try:
            _b.exec(_b.compile(_src, "<test %d>" % _i, "exec"), _tns)
            outcome, why = "P", ""
        except AssertionError as e:
            outcome, why = "F", _why(e)
        except _b.BaseException as e:
            outcome, why = "E", _why(e)
    if why:
        _os.write(2, ("test %d: %s\n" % (_i, why)).encode("utf-8", "replace"))
    _report("%d %s" % (_i, outcome))
_report("END")
"""


def _names_loaded(sources: Sequence[str]) -> set[str]:
    names: set[str] = set()
    for src in sources:
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return names


def _top_level(source: str) -> tuple[set[str], dict[str, str]]:
    """(names a module binds at top level by def, class or assignment; name -> the import statement that binds
    it). Empty when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set(), {}
    names: set[str] = set()
    imports: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and not (
            isinstance(node, ast.ImportFrom) and (node.level or any(a.name == "*" for a in node.names))
        ):
            for a in node.names:
                one = ast.Import if isinstance(node, ast.Import) else ast.ImportFrom
                stmt = ast.Import([a]) if one is ast.Import else ast.ImportFrom(node.module, [a], 0)
                imports[(a.asname or a.name).split(".")[0]] = ast.unparse(stmt)
    return names, imports


class _LeftOperands(ast.NodeTransformer):
    """Renames ``names`` inside the left operand of comparisons only (``assert sum(a, b) == 6``)."""

    def __init__(self, names: set[str]):
        self.names = names

    def visit_Compare(self, node: ast.Compare) -> ast.Compare:
        for n in ast.walk(node.left):
            if isinstance(n, ast.Name) and n.id in self.names:
                n.id = SHADOW_PREFIX + n.id
        node.comparators = [self.visit(c) for c in node.comparators]
        return node


SHADOW_PREFIX = "__rlvr_candidate_"


def tester_names(
    candidate: str, test_setup: str, units: Sequence[str], entry_point: str | None
) -> tuple[list[tuple[str, str]], str, list[str]]:
    """(proxies as (alias, name), imports, units) for the tester.

    Proxies: the entry point (HumanEval) and every name the tests load that the candidate defines, except
    what the test setup defines itself. A candidate function named like a builtin (MBPP's ``sum``) is reached
    only from the left operand of a comparison (renamed there); everywhere else the tests keep the real
    builtin, so a candidate that redefines ``set`` or ``sorted`` cannot change how a test computes its
    expected side. Imports: the candidate's own top-level imports that the tests rely on (``math`` used by an
    assert but imported by the solution), made again in the tester so such names are the real modules."""
    loaded = _names_loaded([*units, test_setup])
    defined, imported = _top_level(candidate)
    setup_defined, setup_imported = _top_level(test_setup)
    own = setup_defined | set(setup_imported)
    names = (loaded & defined) - own
    if entry_point:
        names.add(entry_point)
    shadowing = {n for n in names if n in dir(builtins)} - {entry_point}
    proxies = [(n, n) for n in sorted(names - shadowing)] + [
        (SHADOW_PREFIX + n, n) for n in sorted(shadowing)
    ]
    if shadowing:
        units = [_rewrite(u, shadowing) for u in units]
    imports = [imported[n] for n in sorted((loaded & set(imported)) - own - names - set(dir(builtins)))]
    return proxies, "\n".join(imports), list(units)


def _rewrite(unit: str, shadowing: set[str]) -> str:
    try:
        return ast.unparse(_LeftOperands(shadowing).visit(ast.parse(unit)))
    except (SyntaxError, ValueError, RecursionError):
        return unit


def candidate_program(candidate: str, setup: str) -> str:
    """The candidate process's program (no test, no expected value in it)."""
    body = _CANDIDATE.replace("__RLVR_CANDIDATE__", repr(candidate)).replace("__RLVR_SETUP__", repr(setup))
    return _CODEC + body


def tester_program(
    test_setup: str, units: Sequence[str], proxies: Sequence[tuple[str, str]], nonce: str
) -> str:
    """The tester process's program: the test code, the units and the proxies' names."""
    body = (
        _TESTER.replace("__RLVR_PROXIES__", repr(list(proxies)))
        .replace("__RLVR_TEST_SETUP__", repr(test_setup))
        .replace("__RLVR_UNITS__", repr(list(units)))
        .replace("__RLVR_NONCE__", nonce)
    )
    return _CODEC + body
