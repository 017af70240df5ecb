"""Optimizer: parameter groups, per-parameter state, and hyperparameters as runtime inputs.

An optimizer's update is traced like any other computation, so each parameter's update fuses
into a kernel. Hyperparameters that users change while training (``lr``, ``momentum``...) are
read from 0-d buffers that are refreshed before every step: changing them never recompiles.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from copy import deepcopy
from typing import Any

import numpy as np

from ..ir import ops
from ..ir.buffer import Buffer
from ..tracer.realize import realize
from ..tracer.tensor import Tensor


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class Optimizer:
    """Base class: holds ``param_groups`` and ``state``; subclasses implement ``step``."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        self.defaults = defaults
        self.state: dict[Tensor, dict[str, Any]] = _StateDict()
        self.param_groups: list[dict[str, Any]] = []
        self._scalars: dict[tuple[int, str, str], Tensor] = {}
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = dict(param_group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
            if id(p) in seen:
                raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    def scalar(self, group: dict[str, Any], name: str, like: Tensor, value: Any = None) -> Tensor:
        """A 0-d tensor holding ``group[name]`` (or ``value``) as a runtime input of the graph.

        The buffer keeps its identity across steps, so the compiled update is reused when the
        value changes; only its data is replaced.
        """
        v = group[name] if value is None else value
        key = (id(group), name, like.node.dtype)
        t = self._scalars.get(key)
        if t is None:
            t = Tensor._from_node(ops.buffer(Buffer((), like.node.dtype,
                                                    np.array([v], dtype=like.node.dtype))))
            self._scalars[key] = t
        else:
            buf = t.node.attrs[0]
            if buf.data[0] != v:
                buf.data = np.array([v], dtype=like.node.dtype)
        return t

    def _realize_step(self) -> None:
        """Compute every parameter and state update of this step in one program."""
        tensors = [p for g in self.param_groups for p in g["params"]]
        for st in self.state.values():
            tensors.extend(v for v in st.values() if isinstance(v, Tensor))
        realize(*tensors)

    # ------------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, Any]:
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {index[id(p)]: {k: (v.detach() if isinstance(v, Tensor) else v)
                                for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        params = [p for g in self.param_groups for p in g["params"]]
        saved = [i for g in groups for i in g["params"]]
        if len(saved) != len(params):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
        by_id = dict(zip(saved, params))
        for group, new in zip(self.param_groups, groups):
            for k, v in new.items():
                if k != "params":
                    group[k] = deepcopy(v)
        self.state.clear()
        for k, s in state_dict["state"].items():
            p = by_id[int(k)]
            self.state[p] = {name: (Tensor(v.detach().numpy().astype(p.node.dtype)
                                           if v.dtype.is_floating_point else v.detach().numpy())
                                    if isinstance(v, Tensor) else v)
                             for name, v in s.items()}

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(k for k in g if k != "params"):
                lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


class _StateDict(dict):
    """``optimizer.state``: keyed by parameter identity (Tensor == is elementwise)."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[int, Tensor] = {}

    def __getitem__(self, p: Tensor) -> dict[str, Any]:
        if id(p) not in self._keys:
            self._keys[id(p)] = p
            super().__setitem__(id(p), {})
        return super().__getitem__(id(p))

    def __setitem__(self, p: Tensor, value: dict[str, Any]) -> None:
        self._keys[id(p)] = p
        super().__setitem__(id(p), value)

    def __contains__(self, p: object) -> bool:
        return id(p) in self._keys

    def get(self, p: Tensor, default: Any = None) -> Any:
        return super().get(id(p), default)

    def items(self):
        return [(self._keys[k], v) for k, v in super().items()]

    def keys(self):
        return [self._keys[k] for k in super().keys()]

    def __iter__(self):
        return iter(self.keys())

    def clear(self) -> None:
        super().clear()
        self._keys.clear()
