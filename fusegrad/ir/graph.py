"""Graph: the output nodes of one program, with topological order and a readable printer."""
from __future__ import annotations

from dataclasses import dataclass, field

from .node import Node


def toposort(outputs: tuple[Node, ...] | list[Node]) -> list[Node]:
    """All nodes reachable from ``outputs``, inputs before users (iterative DFS, each input in
    order; a node is marked when first reached: the graph has no cycles)."""
    order: list[Node] = []
    seen: set[Node] = set()
    mark, emit = seen.add, order.append
    for root in outputs:
        if root in seen:
            continue
        mark(root)
        stack = [(root, iter(root.inputs))]
        while stack:
            node, inputs = stack[-1]
            for child in inputs:
                if child not in seen:
                    mark(child)
                    stack.append((child, iter(child.inputs)))
                    break
            else:
                stack.pop()
                emit(node)
    return order


def substitute(outputs: list[Node], replace: dict[Node, Node]) -> list[Node]:
    """``outputs`` rebuilt bottom-up with each node in ``replace`` swapped for its value (applied
    again to the replacement's own inputs, so chains of replacements resolve)."""
    memo: dict[Node, Node] = {}
    stack = list(outputs)
    while stack:
        n = stack[-1]
        if n in memo:
            stack.pop()
            continue
        target = replace.get(n, n)
        if target is not n:
            if target in memo:
                memo[n] = memo[target]
                stack.pop()
            else:
                stack.append(target)
            continue
        pending = [i for i in n.inputs if i not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        new_inputs = tuple(memo[i] for i in n.inputs)
        memo[n] = n if new_inputs == n.inputs else \
            Node(n.op, new_inputs, n.shape, n.dtype, n.attrs, n.loc)
    return [memo[o] for o in outputs]


def consumers(order: list[Node]) -> dict[Node, list[Node]]:
    users: dict[Node, list[Node]] = {n: [] for n in order}
    for n in order:
        for i in n.inputs:
            users[i].append(n)
    return users


@dataclass
class Graph:
    """A program's outputs. Nodes are whatever is reachable from them."""

    outputs: tuple[Node, ...]
    names: dict[Node, str] = field(default_factory=dict)  # optional labels for outputs

    @property
    def nodes(self) -> list[Node]:
        return toposort(self.outputs)

    def __len__(self) -> int:
        return len(self.nodes)


def _fmt_attrs(node: Node) -> str:
    if node.op == "buffer":
        return ""
    if node.op == "const":
        return f"[{node.attrs[0]!r}]"
    if node.op in ("reshape", "expand"):
        return f"[{','.join(map(str, node.shape))}]"
    if not node.attrs:
        return ""
    return "[" + ", ".join(str(a) for a in node.attrs) + "]"


def format_graph(graph: Graph, title: str | None = None) -> str:
    """One node per line: ``%7 : f32[64,256] = add(%5, %6)   # model.py:12``."""
    order = graph.nodes
    ids = {n: i for i, n in enumerate(order)}
    out_names = {n: graph.names.get(n, f"out{k}") for k, n in enumerate(graph.outputs)}
    lines = [f"# {title}  ({len(order)} nodes)"] if title else []
    for n in order:
        args = ", ".join(f"%{ids[i]}" for i in n.inputs)
        head = f"%{ids[n]} : {n.type_str} = {n.op}{_fmt_attrs(n)}({args})"
        if n.op == "buffer":
            head = f"%{ids[n]} : {n.type_str} = buffer()"
        tail = []
        if n.loc:
            tail.append(n.loc)
        if n in out_names:
            tail.append(f"-> {out_names[n]}")
        lines.append(head + (f"   # {'  '.join(tail)}" if tail else ""))
    return "\n".join(lines)
