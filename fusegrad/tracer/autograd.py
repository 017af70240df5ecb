"""``Tensor.backward``: gradients as IR, accumulated lazily into ``.grad`` of leaf tensors."""
from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

from ..ir import autodiff, ops
from ..ir.dtypes import is_float
from ..ir.errors import with_location
from ..ir.graph import substitute, toposort
from ..ir.macro import MACRO, expand_macros
from ..ir.node import Node
from . import capture
from .provenance import user_location
from .tensor import PENDING, Tensor

FREED = object()  # Buffer.source after backward() released the graph behind it

# Ops whose gradient needs no value of the forward pass (torch saves no tensor for them, not
# even a Python number as for x * 2), so a graph made only of these can be differentiated
# again after backward() freed it, as in torch.
_NO_SAVED_VALUES = frozenset({"buffer", "const", "rand", "add", "sub", "neg", "reshape",
                              "permute", "expand", "slice", "pad", "sum", "cast", "detach"})
_SECOND_BACKWARD = ("Trying to backward through the graph a second time (or directly access "
                    "saved tensors after they have already been freed). Saved intermediate "
                    "values of the graph are freed when you call .backward() or "
                    "autograd.grad(). Specify retain_graph=True if you need to backward "
                    "through the graph a second time or if you need to access saved tensors "
                    "after calling backward.")


class LazySource:
    """``Buffer.source`` of a value a compiled replay computed: the expression it realized is
    built only when a backward needs it, from the traced expression over stand-in leaves and
    the leaves of that call (its arguments, the parameters as they were)."""

    __slots__ = ("expr", "stand_ins", "leaves")

    def __init__(self, expr: Node, stand_ins: list[Node], leaves: list[Node]):
        self.expr, self.stand_ins, self.leaves = expr, stand_ins, leaves

    def build(self) -> Node:
        return substitute([self.expr], dict(zip(self.stand_ins, self.leaves)))[0]
RETAINED: "weakref.WeakValueDictionary[int, Tensor]" = weakref.WeakValueDictionary()


def backward(t: Tensor, gradient: Tensor | None = None, retain_graph: bool | None = None,
             create_graph: bool = False, inputs: list[Tensor] | None = None) -> None:
    """Accumulate d(t)/d(leaf), weighted by ``gradient``, into ``leaf.grad`` for every leaf."""
    loc = user_location()
    graph = toposort([t.node])
    root, seed, sources = _root("backward", t, gradient, create_graph, loc, graph)
    if sources:
        graph = toposort([root])
    targets: dict[Node, list[Tensor]] = {}
    for n in graph:
        if n.op == "buffer" and n.attrs[0].owner is not None:
            owner = n.attrs[0].owner()
            if owner is not None and owner.requires_grad:
                targets.setdefault(n, []).append(owner)
    for r in list(RETAINED.values()):
        if r.requires_grad and not r._is_leaf:
            targets.setdefault(_in_graph(r, sources), []).append(r)
    if inputs is not None:
        allowed = {id(i) for i in inputs}
        targets = {n: [x for x in ts if id(x) in allowed] for n, ts in targets.items()}
    if _deferrable(sources, targets):
        grads = {n: ops.grad(root, seed, n, loc)
                 for n in autodiff.reached(root, list(targets), graph)}
        if not retain_graph:
            _free_pending(t, graph, targets)
    else:
        grads = _differentiate(t, root, seed, sources, graph, targets, retain_graph)
    reached = []
    for node, g in grads.items():
        for leaf in targets[node]:
            accumulate_grad(leaf, g)
            reached.append(leaf)
    for hook in list(POST_BACKWARD.values()):
        hook(reached)


def _deferrable(sources: dict[Node, Node], targets: dict[Node, list[Tensor]]) -> bool:
    """Whether ``backward()`` may leave deferred ``grad`` nodes (``autodiff.expand_gradients``)
    instead of building the gradient graphs now: only for gradients of leaves of an unrealized
    graph, without data-parallel hooks (they read each gradient as it is accumulated)."""
    return DEFER and not sources and not POST_BACKWARD and all(n.op == "buffer" for n in targets)


# False: every backward() builds its gradient graphs itself (tests compare both ways).
DEFER = True


# Called after every backward() with the leaves it accumulated gradients into
# (``DistributedDataParallel`` averages them over processes there).
POST_BACKWARD: dict[int, Callable[[list[Tensor]], None]] = {}


def grad(outputs: Tensor | Sequence[Tensor], inputs: Tensor | Sequence[Tensor],
         grad_outputs: Tensor | Sequence[Tensor | None] | None = None,
         retain_graph: bool | None = None, create_graph: bool = False,
         allow_unused: bool | None = None, materialize_grads: bool = False
         ) -> tuple[Tensor | None, ...]:
    """``torch.autograd.grad``: the gradients of ``outputs`` with respect to ``inputs``
    (weighted by ``grad_outputs``), returned instead of accumulated into ``.grad``.

    Args:
        outputs: tensors to differentiate (scalars unless ``grad_outputs`` is given).
        inputs: tensors that require grad: leaves, or values computed from them.
        grad_outputs: the weight of each output (``None``: ones for a scalar output).
        retain_graph: keep the graph for another backward or grad call.
        create_graph: refused (higher-order gradients are not supported).
        allow_unused: give None for an input the outputs do not depend on, instead of raising.
        materialize_grads: give zeros instead of None for such an input.
    """
    loc = user_location()
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    ins = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    weights = [grad_outputs] if isinstance(grad_outputs, Tensor) or grad_outputs is None \
        else list(grad_outputs)
    if len(weights) == 1 and len(outs) > 1 and weights[0] is None:
        weights = [None] * len(outs)
    if len(weights) != len(outs):
        raise RuntimeError(with_location(
            f"grad requires one grad_output per output: got {len(weights)} for {len(outs)} "
            f"outputs", loc))
    for i, x in enumerate(ins):
        if not x.requires_grad:
            raise RuntimeError(with_location(
                f"One of the differentiated Tensors (input {i}) does not require grad", loc))
    total: list[Node | None] = [None] * len(ins)
    for out, weight in zip(outs, weights):
        root, seed, sources = _root("grad", out, weight, create_graph, loc)
        targets: dict[Node, list[Tensor]] = {}
        for x in ins:
            targets.setdefault(_in_graph(x, sources), []).append(x)
        grads = _differentiate(out, root, seed, sources, toposort([root]), targets,
                               retain_graph)
        for i, x in enumerate(ins):
            g = grads.get(_in_graph(x, sources))
            if g is not None:
                g = ops.cast(g, x.node.dtype)
                total[i] = g if total[i] is None else ops.binary("add", total[i], g)
    result: list[Tensor | None] = []
    for i, (x, g) in enumerate(zip(ins, total)):
        if g is None:
            if materialize_grads:
                g = ops.const(0.0, x.node.shape, x.node.dtype, loc)
            elif not allow_unused:
                raise RuntimeError(with_location(
                    f"One of the differentiated Tensors (input {i}, shape "
                    f"{list(x.node.shape)}) appears to not have been used in the graph. Set "
                    f"allow_unused=True if this is the desired behavior.", loc))
            else:
                result.append(None)
                continue
        result.append(Tensor._from_node(g))
    return tuple(result)


def _root(op: str, t: Tensor, gradient: Tensor | None, create_graph: bool, loc: str | None,
          order: list[Node] | None = None) -> tuple[Node, Node, dict[Node, Node]]:
    """The node to differentiate (realized values standing as their expressions), its seed,
    and the realized buffers the graph reaches with their expressions (``order``: the nodes
    of ``t``'s graph, if the caller has them)."""
    if create_graph:
        raise RuntimeError(with_location(
            f"{op}(create_graph=True): higher-order gradients are not supported", loc))
    if not t.requires_grad:
        raise RuntimeError(with_location(
            "element 0 of tensors does not require grad and does not have a grad_fn", loc))
    if t._graph_freed:
        raise RuntimeError(with_location(_SECOND_BACKWARD, loc))
    if gradient is None:
        if t.node.size != 1:
            raise RuntimeError(with_location(
                f"{op}: grad can be implicitly created only for scalar outputs, but the "
                f"tensor has shape {list(t.node.shape)}; pass gradient=", loc))
        seed = ops.const(1.0, t.node.shape, t.node.dtype, loc)
    else:
        if tuple(gradient.node.shape) != tuple(t.node.shape):
            raise RuntimeError(with_location(
                f"{op}: gradient has shape {list(gradient.node.shape)} but the tensor has "
                f"shape {list(t.node.shape)}", loc))
        seed = ops.cast(gradient.detach().node, t.node.dtype, loc)
    root = t.node
    sources = _realized_sources(root, order)
    if sources:
        # Differentiate through values that were realized since they were traced.
        root = substitute([root], sources)[0]
    return root, seed, sources


def _in_graph(t: Tensor, sources: dict[Node, Node]) -> Node:
    """``t``'s node as the differentiated graph has it (realized values as expressions)."""
    return substitute([t.node], sources)[0] if sources else t.node


def _differentiate(t: Tensor, root: Node, seed: Node, sources: dict[Node, Node],
                   graph: list[Node], targets: dict[Node, list[Tensor]],
                   retain_graph: bool | None) -> dict[Node, Node]:
    """Gradient graphs of ``root`` for each target node, reading realized values from their
    buffers; frees the graph unless ``retain_graph``."""
    grads = autodiff.backward(root, seed, list(targets), graph)
    if not retain_graph:
        for buf_node in sources:
            buf_node.attrs[0].source = FREED
        _free_pending(t, graph, targets)
    if sources and grads:
        # ...and read those values back from their buffers rather than recomputing them (the
        # gradients were built from macros' expansions: their outputs map back too)
        back = {src: buf for buf, src in sources.items()}
        back.update(zip(expand_macros(list(back)), list(back.values())))
        keys = list(grads)
        grads = dict(zip(keys, substitute([grads[k] for k in keys], back)))
    return grads


def _free_pending(t: Tensor, graph: list[Node], targets: dict[Node, list[Tensor]]) -> None:
    """Mark the pending tensors of a differentiated ``graph`` (inputs before users) whose
    gradient needs saved values as freed, as torch frees a graph's saved tensors: backward()
    from them, or from anything computed from them later, raises unless the first call
    retained the graph. Tensors computed afterwards from the same leaves are new graphs."""
    saves = _saving(graph, set(targets))
    if not saves:
        return
    t._graph_freed = True
    for pending in list(PENDING.values()):
        if pending.requires_grad and pending.node in saves:
            pending._graph_freed = True


def _saving(order: list[Node], differentiable: set[Node]) -> set[Node]:
    """The nodes of ``order`` (inputs before users) whose gradient, flowing from the nodes of
    ``differentiable`` (which it extends), needs saved values of the forward pass."""
    saves: set[Node] = set()
    flows, reads_no_flow = differentiable.add, differentiable.isdisjoint
    save, reads_no_save = saves.add, saves.isdisjoint
    for n in order:
        if n.op == "detach" or reads_no_flow(n.inputs):
            continue
        flows(n)
        if (n.op not in _NO_SAVED_VALUES and (n.op != MACRO or _macro_saves(n))) or \
                not reads_no_save(n.inputs):
            save(n)
    return saves


_MACRO_SAVES: dict[tuple, bool] = {}


def _macro_saves(node: Node) -> bool:
    """Whether the gradient of a macro node's expansion needs saved values (found once per
    kind, params and input types): im2col windows are pads, slices and adds, and backward can
    run through them again, as in torch."""
    key = (node.attrs, tuple((i.shape, i.dtype) for i in node.inputs))
    saves = _MACRO_SAVES.get(key)
    if saves is None:
        inputs = set(node.inputs)
        inside = [n for n in toposort(expand_macros([node])) if n not in inputs]
        saves = _MACRO_SAVES[key] = bool(_saving(
            inside, {i for i in node.inputs if is_float(i.dtype)}))
    return saves


def _realized_sources(root: Node, order: list[Node] | None = None) -> dict[Node, Node]:
    """Buffer node -> the expression it realized, for every such buffer the graph reaches
    (``order``: the nodes of ``root``'s graph, if known; a graph without such a buffer, the
    usual case, is then only scanned)."""
    if order is not None and not any(
            n.op == "buffer" and n.attrs[0].source is not None for n in order):
        return {}
    found: dict[Node, Node] = {}
    stack, seen = [root], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "buffer":
            src = n.attrs[0].source
            if isinstance(src, LazySource):
                src = n.attrs[0].source = src.build()
            if src is FREED:
                raise RuntimeError(with_location(_SECOND_BACKWARD, user_location()))
            if src is not None:
                found[n] = src
                stack.append(src)
        else:
            stack.extend(n.inputs)
    return found


def accumulate_grad(leaf: Tensor, g: Node) -> None:
    g = ops.cast(g, leaf.node.dtype)
    trace = capture.active()
    if trace is not None:
        trace.backward = True
    if leaf.grad is None:
        leaf.grad = capture.mark_state(Tensor._from_node(g))
    else:
        leaf.grad._write(ops.binary("add", leaf.grad.node, g, g.loc))
