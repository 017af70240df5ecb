"""What fusion's stages share: movement chains composed into Views, and shape helpers."""
from __future__ import annotations

from ..node import Node
from ..ops import ELEMENTWISE, MOVEMENT, REDUCE
from ..view import View

Shape = tuple[int, ...]


def shape_str(shape: Shape) -> str:
    """``32x10`` for (32, 10); ``scalar`` for ()."""
    return "x".join(map(str, shape)) if shape else "scalar"


def reduce_axes(node: Node) -> tuple[int, ...]:
    """The axes a ``sum``/``max``/``argmax`` node reduces."""
    axes = node.attrs[0]
    return axes if isinstance(axes, tuple) else (axes,)


def kept(shape: Shape, axes: tuple[int, ...]) -> Shape:
    """``shape`` with ``axes`` set to 1: the shape a reduction over ``axes`` keeps."""
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def is_unit_reshape(node: Node) -> bool:
    """A reshape that only adds or drops size-1 dims (the elements keep their order and index)."""
    return [d for d in node.shape if d != 1] == [d for d in node.inputs[0].shape if d != 1]


def is_computed(node: Node) -> bool:
    """Whether ``node`` is computed in a kernel's body (elementwise, reduction or gather)."""
    return node.op in ELEMENTWISE or node.op in REDUCE or node.op == "gather"


def _apply(view: View, mv: Node) -> View | None:
    if mv.op == "reshape":
        return view.reshape(mv.shape)
    if mv.op == "permute":
        return view.permute(mv.attrs[0])
    if mv.op == "expand":
        return view.expand(mv.shape)
    if mv.op == "slice":
        return view.slice(mv.attrs[0])
    return view.pad(mv.shape, mv.attrs[0])


def movement_chain(node: Node) -> tuple[Node, list[Node]]:
    """The non-movement base under ``node`` and the movement ops from the base up to ``node``."""
    chain = []
    while node.op in MOVEMENT:
        chain.append(node)
        node = node.inputs[0]
    chain.reverse()
    return node, chain


def compose(node: Node) -> tuple[Node, View, list[Node]]:
    """The view through which ``node`` reads memory: ``(src, view, breaks)``.

    ``breaks`` lists the movement nodes whose input had to be materialised because the view
    could not compose through them; ``src`` is then the input of the last one.
    """
    base, chain = movement_chain(node)
    src, view, breaks = base, View.contiguous(base.shape), []
    for mv in chain:
        nxt = _apply(view, mv)
        if nxt is None:
            # over a contiguous view every movement op composes, so this cannot fail twice
            breaks.append(mv)
            src = mv.inputs[0]
            nxt = _apply(View.contiguous(src.shape), mv)
            assert nxt is not None
        view = nxt
    return src, view, breaks


def blas_friendly(view: View) -> bool:
    """Whether a matmul operand's matrices are dense in row- or column-major order."""
    if view.masks is not None:
        return False
    (m, k), (sm, sk) = view.shape[-2:], view.strides[-2:]
    rows = (k == 1 or sk == 1) and (m == 1 or sm == k)
    cols = (m == 1 or sm == 1) and (k == 1 or sk == m)
    return rows or cols
