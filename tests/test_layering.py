"""The import rules between fusegrad's layers (docs/architecture.md, "Layers"), read from the
source of every module: module-level and function-local imports, absolute and relative.

- ``fusegrad.ir`` imports nothing of fusegrad above it;
- ``fusegrad.backends`` imports only ``fusegrad.ir``;
- ``fusegrad.nnlib`` and ``fusegrad.optimlib`` never import ``fusegrad.ir`` or ``fusegrad.backends``;
- the base modules (``fusegrad.errors``, ``fusegrad.lru``) import nothing of fusegrad, and every
  layer may import them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fusegrad

ROOT = Path(fusegrad.__file__).parent
BASE = frozenset({"fusegrad.errors", "fusegrad.lru"})

def module_name(path: Path) -> str:
    parts = ("fusegrad",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, name: str, is_package: bool) -> set[str]:
    """Every fusegrad module the source of module ``name`` imports (``from m import x`` counts
    as ``m.x``: ``m`` itself or its submodule ``x``)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "fusegrad" or m.startswith("fusegrad.")}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_base(module: str) -> bool:
    return any(within(module, b) for b in BASE)


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` (None: it may)."""
    if within(importer, "fusegrad.errors") or within(importer, "fusegrad.lru"):
        return "a base module imports nothing of fusegrad"
    if is_base(imported):
        return None
    if within(importer, "fusegrad.ir") and not within(imported, "fusegrad.ir"):
        return "ir imports only ir"
    if within(importer, "fusegrad.backends") and not (
            within(imported, "fusegrad.backends") or within(imported, "fusegrad.ir")):
        return "backends import only ir"
    if (within(importer, "fusegrad.nnlib") or within(importer, "fusegrad.optimlib")) and (
            within(imported, "fusegrad.ir") or within(imported, "fusegrad.backends")):
        return "nnlib and optimlib never import ir or backends"
    return None


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_module_is_read():
    names = {module_name(p) for p in MODULES}
    assert {"fusegrad.ir.ops", "fusegrad.backends.interpreter", "fusegrad.nnlib.functional",
            "fusegrad.optimlib.sgd", "fusegrad.errors"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_follow_the_layers(path):
    importer = module_name(path)
    broken = sorted(f"{importer} imports {imported}: {why}"
                    for imported in imported_modules(path)
                    if (why := violation(importer, imported)) is not None)
    assert not broken, "\n".join(broken)


def test_the_rules_catch_what_they_forbid():
    """The parser sees function-local and relative imports, and each rule refuses its case."""
    source = ("from ..ir.ops import add\n"
              "def f():\n"
              "    from ..backends import pipeline\n"
              "    import fusegrad.tracer.tensor\n")
    assert imports_in(source, "fusegrad.nnlib.probe", is_package=False) == {
        "fusegrad.ir.ops.add", "fusegrad.backends.pipeline", "fusegrad.tracer.tensor"}
    assert imports_in("from . import ops", "fusegrad.ir", is_package=True) == {"fusegrad.ir.ops"}
    assert violation("fusegrad.nnlib.functional", "fusegrad.ir.ops.add")
    assert violation("fusegrad.nnlib.modules.rnn", "fusegrad.ir")
    assert violation("fusegrad.optimlib.sgd", "fusegrad.ir.ops")
    assert violation("fusegrad.nnlib.functional", "fusegrad.backends.pipeline")
    assert violation("fusegrad.nnlib.functional", "fusegrad.tracer.tensor") is None
    assert violation("fusegrad.ir.ops", "fusegrad.tracer.tensor")
    assert violation("fusegrad.ir.ops", "fusegrad")
    assert violation("fusegrad.ir.ops", "fusegrad.errors.ShapeError") is None
    assert violation("fusegrad.backends.pipeline", "fusegrad.tracer.realize")
    assert violation("fusegrad.backends.pipeline", "fusegrad.ir.graph") is None
    assert violation("fusegrad.errors", "fusegrad.ir.node")
