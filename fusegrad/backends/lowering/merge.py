"""Loop merging: adjacent dims that every memory access walks as one become one loop."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...ir.view import View


@dataclass(frozen=True)
class Access:
    """One way a kernel indexes memory: through ``view`` at a level (``full``: every dim of the
    kernel shape; ``kept``: the dims a reduction keeps), with ``free`` dims whose index is not a
    loop variable (a gather's axis)."""

    view: View
    level: str
    free: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoopAxis:
    """One loop of the nest: variable ``var`` runs over ``extent``, the merged ``dims``."""

    var: str
    dims: tuple[int, ...]
    extent: int


def mergeable(a: int, b: int, shape: tuple[int, ...], reduced: set[int],
              accesses: list[Access]) -> bool:
    """Dims ``a`` then ``b`` of ``shape`` can share one loop variable for every access."""
    for acc in accesses:
        if a in acc.free or b in acc.free:
            return False
        if acc.level == "kept" and a in reduced:
            continue  # kept-level accesses do not index reduced dims
        v = acc.view
        if v.mask(a) is not None or v.mask(b) is not None:
            return False
        if v.shape[a] != shape[a] or v.shape[b] != shape[b]:
            return False
        if v.strides[a] != v.strides[b] * shape[b]:
            return False
    return True


def group_dims(dims: list[int], shape: tuple[int, ...], reduced: set[int],
               accesses: list[Access]) -> list[LoopAxis]:
    """The loops over ``dims`` (in order): each run of mergeable neighbours becomes one loop,
    named ``i<first dim>``."""
    groups: list[list[int]] = []
    for d in dims:
        if groups and mergeable(groups[-1][-1], d, shape, reduced, accesses):
            groups[-1].append(d)
        else:
            groups.append([d])
    return [LoopAxis(f"i{g[0]}", tuple(g), math.prod(shape[d] for d in g)) for g in groups]
