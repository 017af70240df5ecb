"""A kernel that updates an array in place reads that array's old value through its output.

An optimizer's update reads a parameter (and its moments) at each element and writes the new
value into the same array (``numba_cpu/program_assigns.py``). Given as two arguments, the input
and the output are two pointers to LLVM, which checks at run time whether their ranges overlap
before it runs the vector loop; they overlap wholly, so the kernel runs its scalar loop (SGD's
update of 200K float32 elements, on AVX-512: 0.17 ms against 0.06 ms read through its output
when timed alone; 0.27 against 0.12 ms inside mlp_b64's compiled step). Read through
the output argument itself, each element is loaded, then stored at the same address in the same
iteration, a dependence LLVM sees needs no check.

``read_through`` rewrites a nest so: every read of an input argument named in ``through`` reads
the output argument instead, and the input argument goes. Its callers pass only inputs read at
the element the kernel writes (``program_assigns._reads_only_its_own_element``), and run the
kernel only with that output being the input's memory.
"""
from __future__ import annotations

from dataclasses import replace

from ...ir.node import Node
from .loopnest import Loop, LoopNest, Read, Stmt, children_mapped


def read_through(nest: LoopNest, through: dict[Node, Node]) -> LoopNest:
    """``nest`` with each input argument holding a node of ``through`` (at element 0) read
    through the output argument holding the node it maps to, and dropped from the arguments.
    Its function name gains ``_io``. Unchanged when no argument matches."""
    outputs = {p.node: p.name for p in nest.params if p.output}
    names = {p.name: outputs[through[p.node]] for p in nest.params
             if not p.output and p.base == 0 and through.get(p.node) in outputs}
    if not names:
        return nest
    return replace(nest, function=f"{nest.function}_io",
                   params=tuple(p for p in nest.params if p.name not in names),
                   prelude=_stmts(nest.prelude, names), body=_stmts(nest.body, names))


def _stmts(stmts: list[Stmt], names: dict[str, str]) -> list[Stmt]:
    return [_mapped(s, names) for s in stmts]


def _mapped(x, names: dict[str, str]):
    if isinstance(x, Loop):
        return replace(x, body=_stmts(x.body, names), hoisted=_stmts(x.hoisted, names))
    if isinstance(x, Read) and x.array in names:
        x = replace(x, array=names[x.array])
    return children_mapped(x, lambda v: _mapped(v, names))
