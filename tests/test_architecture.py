"""The shape of the package: no import cycle, small modules, one error base, no printing in library code."""
from __future__ import annotations

import ast
import os

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "xvad")
TERMINAL = {"xvad.cli", "xvad.stream.cli", "xvad.demo", "xvad.service.serve", "xvad.service.cli",   # own the terminal
            "xvad.adapt.cli"}


def modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(SRC))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def top_level_imports(name: str, path: str, known: set[str]) -> set[str]:
    """The package modules ``name`` imports when it is imported (not imports inside functions)."""
    tree = ast.parse(open(path).read())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in tree.body:
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = (base + "." + node.module if node.module else base) if node.level else (node.module or "")
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        found |= {t for t in targets if t in known and t != name}
    return found


def test_no_import_cycle():
    mods = modules()
    graph = {m: top_level_imports(m, p, set(mods)) for m, p in mods.items()}
    # a package's __init__ re-exporting its submodules is no cycle: drop edges from a module to its parents
    graph = {m: {t for t in deps if not m.startswith(t + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(t):] + [t]) if t in trail
                            else f"import cycle through {m} -> {t}")
            if t not in state:
                visit(t, trail + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_errors_module_imports_nothing_of_the_package():
    assert top_level_imports("xvad.errors", os.path.join(SRC, "errors.py"), set(modules()) | {"xvad"}) == set()
    tree = ast.parse(open(os.path.join(SRC, "errors.py")).read())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]


def test_every_user_error_derives_from_xvad_error():
    import xvad.errors as errors

    kinds = [getattr(errors, n) for n in errors.__all__ if n.endswith("Error") and n != "XvadError"]
    assert len(kinds) >= 7 and all(issubclass(k, errors.XvadError) for k in kinds)
    for name, path in modules().items():   # no error class for users defined anywhere else
        tree = ast.parse(open(path).read())
        extra = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Error")]
        assert name == "xvad.errors" or not extra, f"{name} defines {extra}; define user errors in xvad.errors"


def test_modules_are_small():
    big = {m: n for m, p in modules().items() if (n := sum(1 for _ in open(p))) > 400}
    assert not big, f"modules over 400 lines: {big}"


def test_library_code_logs_instead_of_printing():
    for name, path in modules().items():
        if name in TERMINAL:
            continue
        tree = ast.parse(open(path).read())
        prints = [n.lineno for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
        backend = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                   and isinstance(n.func, ast.Attribute) and n.func.attr == "use"
                   and isinstance(n.func.value, ast.Name) and n.func.value.id == "matplotlib"]
        assert not prints, f"{name} prints at lines {prints}; log through logging"
        assert not backend, f"{name} sets matplotlib's backend at lines {backend}; draw on a Figure instead"
