"""Answers that delegate to the library's reference: found in the student's code, not guessed.

A question asks the student to write the functions its check calls (``kl_divergence`` for
``check_kl_divergence(kl_divergence)``). The course library holds a reference of the same name
(``gen3d_course.models.autoencoders.kl_divergence``). A student cell that imports such a name from
``gen3d_course``, or reads it as an attribute of a ``gen3d_course`` module under any alias
(``ae.kl_divergence``, ``m = ae; m.kl_divergence``, ``getattr(ae, "kl_divergence")``), is found
from the cells' syntax tree. Code that builds the name at run time (``getattr(ae, "kl_" + x)``)
is not found: see docs/instructors.md.
"""
from __future__ import annotations

import ast
import builtins
import threading

LIBRARY = "gen3d_course"
# CPython 3.11's AST constructor is not safe across threads ("recursion depth mismatch" with
# --jobs 2): every parse and unparse of the grader goes through this lock.
AST_LOCK = threading.RLock()


def targets(check_source: str, imports: str) -> set[str]:
    """The names a check reads that neither its own code nor the released imports define."""
    with AST_LOCK:
        return _targets(check_source, imports)


def _targets(check_source: str, imports: str) -> set[str]:
    bound = {(a.asname or a.name).split(".")[0] for node in ast.walk(ast.parse(imports))
             if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    tree = ast.parse(check_source)
    stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    stored |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    stored |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
               for a in n.args + n.kwonlyargs + n.posonlyargs}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return {n for n in read - bound - stored if not hasattr(builtins, n)}


def _from_library(module: str | None) -> bool:
    return bool(module) and (module == LIBRARY or module.startswith(LIBRARY + "."))


def _root(node) -> str | None:
    """The name an attribute chain starts from; ``__import__("gen3d_course...")`` counts as one."""
    while isinstance(node, ast.Attribute):
        node = node.value
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
            _from_library(str(node.args[0].value)):
        return LIBRARY  # __import__, importlib.import_module
    return node.id if isinstance(node, ast.Name) else None


def uses(sources: list[tuple[int, str]], names: set[str]) -> dict[str, str]:
    """``{name: where}`` for each of ``names`` that the cells take from the library."""
    with AST_LOCK:
        return _uses(sources, names)


def _uses(sources: list[tuple[int, str]], names: set[str]) -> dict[str, str]:
    from IPython.core.inputtransformer2 import TransformerManager

    transform = TransformerManager().transform_cell
    aliases = {LIBRARY}  # names bound to a gen3d_course module (or to the package)
    found: dict[str, str] = {}
    trees = []
    for number, source in sources:
        try:
            trees.append((number, ast.parse(transform(source))))
        except SyntaxError:
            continue
    for _ in range(2):  # twice: an alias made in a later cell may be used in an earlier function
        for number, tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for a in node.names:
                        if _from_library(a.name):
                            aliases.add(a.asname or a.name.split(".")[0])
                elif isinstance(node, ast.ImportFrom) and _from_library(node.module):
                    for a in node.names:
                        if a.name in names:
                            found.setdefault(a.name, f"{node.module}.{a.name} (imported in cell {number})")
                        aliases.add(a.asname or a.name)  # a submodule, or a name we may not track
                elif isinstance(node, ast.Assign) and _root(node.value) in aliases:
                    aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for number, tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in names and _root(node.value) in aliases:
                    found.setdefault(node.attr, f"{ast.unparse(node)} (cell {number})")
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                        node.func.id == "getattr" and len(node.args) >= 2 and \
                        _root(node.args[0]) in aliases and isinstance(node.args[1], ast.Constant) and \
                        node.args[1].value in names:
                    found.setdefault(node.args[1].value, f"{ast.unparse(node)} (cell {number})")
    return found
