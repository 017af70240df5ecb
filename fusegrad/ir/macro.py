"""Macro nodes: a subgraph the tracer records as one node per output, built only when the graph
is compiled.

A recurrent layer's time loop is about 1,500 nodes per forward (an LSTM of 2 layers over 35
steps). Built eagerly on every training step, they cost the uncompiled step about 2.5 ms of node
construction, then again in every walk of the graph: ``backward()``'s, the structural key's
(another ~1 ms), the program cache's comparison of keys. As one ``macro`` node per output they
cost a few microseconds, and the subgraph is built once per program compiled, as deferred
gradients are (``autodiff.expand_gradients``, which expands macros first): a step whose graph
repeats finds its program by the key of the macro nodes alone. (A backward that cannot be
deferred, through a retained or realized output, builds the expansion then.) The expanders'
modules are part of the disk program cache's fingerprint (``program_cache.MACRO_MODULES``).

``macro(kind, inputs, outputs, params)`` makes the nodes (``call(kind, inputs, params)`` when the
outputs' shapes are to be found by expanding once); ``register(kind, expand)`` names the
function that builds the subgraph, ``expand(inputs, params, loc) -> output nodes``, which must
build from ``inputs`` and ``params`` alone (they are the macro's identity). Expanded graphs
are the graphs the expanding function builds, node for node: programs, values and gradients
do not change. For autodiff a macro is differentiable in every input: a deferred
``backward()`` gives a gradient (possibly zeros) to every leaf that reaches one, so an expander
should be given only inputs its outputs read (``call`` gives the expansion itself where an
output reads none).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from .errors import FusegradError
from .graph import substitute, toposort
from .node import Node

Expander = Callable[[tuple[Node, ...], tuple, "str | None"], Sequence[Node]]
EXPANDERS: dict[str, Expander] = {}
MACRO = "macro"


def register(kind: str, expand: Expander) -> None:
    """Make ``expand`` the builder of the subgraphs of macros of ``kind``."""
    EXPANDERS[kind] = expand


def macro(kind: str, inputs: Sequence[Node], outputs: Sequence[tuple[tuple[int, ...], str]],
          params: tuple, loc: str | None = None) -> list[Node]:
    """One ``macro`` node per ``(shape, dtype)`` of ``outputs``: output ``i`` of the subgraph
    that ``EXPANDERS[kind](inputs, params, loc)`` builds. ``params``: hashable, made of
    numbers, strings, bools, None and tuples (they are part of the graph's key)."""
    if kind not in EXPANDERS:
        raise FusegradError(f"macro kind {kind!r} has no registered expansion")
    inputs = tuple(inputs)
    return [Node(MACRO, inputs, tuple(shape), dtype, (kind, params, i), loc)
            for i, (shape, dtype) in enumerate(outputs)]


_TYPES: dict[tuple, list[tuple[tuple[int, ...], str]] | None] = {}
_TYPES_SIZE = 4096


def call(kind: str, inputs: Sequence[Node], params: tuple, loc: str | None = None
         ) -> list[Node]:
    """The outputs of ``EXPANDERS[kind](inputs, params, loc)``, as macro nodes.

    The first call per kind, params and input shapes and dtypes expands once to learn the
    outputs' shapes and dtypes (an error of the expander is raised then, at the user's line).
    Where an output reads none of ``inputs`` (all padding, say) the expansion itself is given
    (a macro would pass gradients to inputs it does not read).
    """
    inputs = tuple(inputs)
    signature = (kind, params, tuple((n.shape, n.dtype) for n in inputs))
    if signature in _TYPES:
        types = _TYPES[signature]
    else:
        nodes = EXPANDERS[kind](inputs, params, loc)
        _check_leaves(kind, inputs, nodes)
        reads = set(inputs)
        types = [(n.shape, n.dtype) for n in nodes] if all(
            reads.intersection(toposort([n])) for n in nodes) else None
        if len(_TYPES) >= _TYPES_SIZE:
            _TYPES.clear()
        _TYPES[signature] = types
    if types is None:
        return list(EXPANDERS[kind](inputs, params, loc))
    return macro(kind, inputs, types, params, loc)


def _check_leaves(kind: str, inputs: tuple[Node, ...], nodes: Sequence[Node]) -> None:
    """An expansion may read no buffer that its inputs do not: a program's inputs are the
    leaves of the graph as keyed."""
    known = set(toposort(list(inputs)))
    new = [n for n in toposort(list(nodes)) if n.op == "buffer" and n not in known]
    if new:
        raise FusegradError(f"macro {kind!r}: its expansion reads {new[0]!r}, which is not "
                            "among its inputs; pass it as an input")


def expand_macros(outputs: Sequence[Node]) -> list[Node]:
    """``outputs`` with every macro node replaced by its subgraph (the same list when there is
    none). Each macro call (kind, params, inputs) is built once for all of its outputs."""
    order = toposort(list(outputs))
    macros = [n for n in order if n.op == MACRO]
    if not macros:
        return list(outputs)
    built: dict[tuple, Sequence[Node]] = {}
    replace: dict[Node, Node] = {}
    for n in macros:
        kind, params, i = n.attrs
        call = (kind, params, n.inputs)
        nodes = built.get(call)
        if nodes is None:
            nodes = built[call] = EXPANDERS[kind](n.inputs, params, n.loc)
        if i >= len(nodes):
            raise FusegradError(f"macro {kind!r}: its expansion has {len(nodes)} outputs, "
                                f"output {i} was asked for")
        out = nodes[i]
        if out.shape != n.shape or out.dtype != n.dtype:
            raise FusegradError(f"macro {kind!r} output {i}: expanded to {out.type_str}, "
                                f"declared {n.type_str}")
        replace[n] = out
    # a macro's inputs may be other macros' outputs: substitute resolves the chains
    return substitute(list(outputs), replace)
