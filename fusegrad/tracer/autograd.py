"""``Tensor.backward``: gradients as IR, accumulated lazily into ``.grad`` of leaf tensors."""
from __future__ import annotations

import weakref

from ..ir import autodiff, ops
from ..ir.errors import with_location
from ..ir.graph import substitute, toposort
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
    if create_graph:
        raise RuntimeError(with_location(
            "backward(create_graph=True): higher-order gradients are not supported", loc))
    if not t.requires_grad:
        raise RuntimeError(with_location(
            "element 0 of tensors does not require grad and does not have a grad_fn", loc))
    if t._graph_freed:
        raise RuntimeError(with_location(_SECOND_BACKWARD, loc))
    if gradient is None:
        if t.node.size != 1:
            raise RuntimeError(with_location(
                f"backward: grad can be implicitly created only for scalar outputs, but the "
                f"tensor has shape {list(t.node.shape)}; pass gradient=", loc))
        seed = ops.const(1.0, t.node.shape, t.node.dtype, loc)
    else:
        if tuple(gradient.node.shape) != tuple(t.node.shape):
            raise RuntimeError(with_location(
                f"backward: gradient has shape {list(gradient.node.shape)} but the tensor has "
                f"shape {list(t.node.shape)}", loc))
        seed = ops.cast(gradient.detach().node, t.node.dtype, loc)
    root = t.node
    sources = _realized_sources(root)
    if sources:
        # Differentiate through values that were realized since they were traced.
        root = substitute([root], sources)[0]
    targets: dict[Node, list[Tensor]] = {}
    graph = toposort([root])
    for n in graph:
        if n.op == "buffer" and n.attrs[0].owner is not None:
            owner = n.attrs[0].owner()
            if owner is not None and owner.requires_grad:
                targets.setdefault(n, []).append(owner)
    for r in list(RETAINED.values()):
        if r.requires_grad and not r._is_leaf:
            # in the graph, realized values stand as the expressions they realized
            node = substitute([r.node], sources)[0] if sources else r.node
            targets.setdefault(node, []).append(r)
    if inputs is not None:
        allowed = {id(i) for i in inputs}
        targets = {n: [x for x in ts if id(x) in allowed] for n, ts in targets.items()}
    grads = autodiff.backward(root, seed, list(targets))
    if not retain_graph:
        for buf_node in sources:
            buf_node.attrs[0].source = FREED
        _free_pending(t, graph, targets)
    if sources and grads:
        # ...and read those values back from their buffers rather than recomputing them.
        back = {src: buf for buf, src in sources.items()}
        keys = list(grads)
        grads = dict(zip(keys, substitute([grads[k] for k in keys], back)))
    for node, g in grads.items():
        for leaf in targets[node]:
            accumulate_grad(leaf, g)


def _free_pending(t: Tensor, graph: list[Node], targets: dict[Node, list[Tensor]]) -> None:
    """Mark the pending tensors of a differentiated ``graph`` (inputs before users) whose
    gradient needs saved values as freed, as torch frees a graph's saved tensors: backward()
    from them, or from anything computed from them later, raises unless the first call
    retained the graph. Tensors computed afterwards from the same leaves are new graphs."""
    differentiable: set[Node] = set(targets)   # nodes a gradient flows through
    saves: set[Node] = set()
    for n in graph:
        if n.op == "detach" or not any(i in differentiable for i in n.inputs):
            continue
        differentiable.add(n)
        if n.op not in _NO_SAVED_VALUES or any(i in saves for i in n.inputs):
            saves.add(n)
    if not saves:
        return
    t._graph_freed = True
    for pending in list(PENDING.values()):
        if pending.requires_grad and pending.node in saves:
            pending._graph_freed = True


def _realized_sources(root: Node) -> dict[Node, Node]:
    """Buffer node -> the expression it realized, for every such buffer the graph reaches."""
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
    if trace is not None and id(leaf) not in trace.grads:
        # how this trace's program relates to the gradient the leaf had before the call: the
        # body set it first (to None or a value), it adds to it, or there was none
        mode = "cleared" if id(leaf) in trace.grad_cleared else \
            "read" if leaf.grad is not None else "none"
        trace.grads[id(leaf)] = (weakref.ref(leaf), mode)
    if leaf.grad is None:
        leaf.grad = capture.mark_state(Tensor._from_node(g))
    else:
        leaf.grad._bind(ops.binary("add", leaf.grad.node, g, g.loc))
