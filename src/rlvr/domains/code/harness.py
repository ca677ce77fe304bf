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

The runtime of both sides (codec, call serving, test running) is :mod:`rlvr.sandbox.paired`, preloaded in
every sandbox worker; this module decides what the tester proxies and writes the two (tiny) programs.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Sequence


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
    return f"import rlvr_paired\nrlvr_paired.serve({candidate!r}, {setup!r})\n"


def tester_program(
    test_setup: str, units: Sequence[str], proxies: Sequence[tuple[str, str]], nonce: str
) -> str:
    """The tester process's program: the test code, the units and the proxies' names."""
    return f"import rlvr_paired\nrlvr_paired.run_tests({list(proxies)!r}, {test_setup!r}, {list(units)!r}, {nonce!r})\n"
