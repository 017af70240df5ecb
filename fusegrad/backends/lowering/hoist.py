"""Condition hoisting: a mask condition that reads only outer loop variables is computed once
per iteration of the innermost loop it reads, into a flag, instead of once per element; the
inner loop then selects on a known flag (a 16-way concatenation ran 4x faster)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .loopnest import Assign, Cond, Conjunction, Flag, Loop


@dataclass
class OpenLoop:
    """A loop being filled, with the flags already hoisted into it (conditions -> flag)."""

    loop: Loop
    flags: dict[tuple[Cond, ...], str] = field(default_factory=dict)


def hoist(conds: list[Cond], loops: list[OpenLoop], fresh: Callable[[str], str]
          ) -> list[Cond | Flag]:
    """``conds`` as the innermost of ``loops`` should test them: those that read only variables
    of outer loops replaced by flags computed in the body of the innermost loop they read (one
    flag per loop and set of conditions; ``fresh`` names new flags)."""
    position = {o.loop.var: i for i, o in enumerate(loops)}
    inline: list[Cond | Flag] = []
    by_loop: dict[int, list[Cond]] = {}
    for cond in conds:
        names = cond.names()
        target = max(position[n] for n in names) \
            if names and names <= position.keys() else None
        if target is None or target == len(loops) - 1:
            inline.append(cond)
        else:
            by_loop.setdefault(target, []).append(cond)
    for target, group in sorted(by_loop.items()):
        open_loop, key = loops[target], tuple(group)
        if key not in open_loop.flags:
            open_loop.flags[key] = flag = fresh("c")
            open_loop.loop.hoisted.append(Assign(flag, Conjunction(key)))
        inline.insert(0, Flag(open_loop.flags[key]))
    return inline
