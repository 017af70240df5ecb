"""Optimizer: parameter groups, per-parameter state, and hyperparameters as runtime inputs.

An optimizer's update is traced like any other computation, so each parameter's update fuses
into a kernel, and ``step()`` realizes every update of the step in one program.

Three rules keep that program compiled once for a whole training run:

- Float hyperparameters (``lr``, ``betas``, ``eps``...) are read from 0-d buffers refreshed
  before every step (``Optimizer.scalar``): changing ``param_groups[i]['lr']`` — by hand, as the
  learning-rate finder does, or through a scheduler — changes data, never the graph. Only the
  Python *branches* on hyperparameters (``momentum != 0``, ``amsgrad``, ``maximize``) shape the
  graph, so flipping one of those compiles a new program.
- Per-parameter state starts as buffers (``zeros_state``), so the first step has the structure
  of every later one.
- Step counters are 0-d float32 tensors in ``state[p]['step']`` (as in torch), incremented in the
  graph; bias corrections are computed in the graph from them.

Under ``fusegrad.compile`` the step's Python does not run on replays: parameters and state
tensors are declared as state the compiled program updates, and a replay hook refreshes every
runtime scalar from ``param_groups`` before each replay (and refuses to replay if an option that
shapes the graph, such as ``momentum == 0`` or ``amsgrad``, has changed since tracing).

Custom optimizers that override ``step`` as in torch (``p.add_(d_p, alpha=-group['lr'])``) are
compiled like the built-in ones: ``param_groups`` entries are :class:`ParamGroup` dicts whose
float hyperparameters (``runtime_options``: ``lr``, ``momentum``, ``eps``...) read as
:class:`~fusegrad.optimlib.runtime.RuntimeFloat` — a ``float`` in every Python sense that the
tracer takes as a runtime input rather than a constant, also through arithmetic (``-lr``,
``lr * k``). Changing ``param_groups[i]['lr']`` thus never compiles a new program, eagerly or
under ``fusegrad.compile`` (where the replay hook refreshes these scalars as well). Values are
stored as plain numbers: ``state_dict``, ``deepcopy`` and pickling see ``float``.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from ..errors import with_location
from ..tracer import state as tracer_state
from ..tracer.grad_mode import enable_grad, no_grad
from ..tracer.provenance import user_location
from ..tracer.tensor import Tensor
from .runtime import RuntimeFloat, RuntimeInt, plain


# Calls of an optimizer's replayed update that trace it again (its parameters' grads, options or
# state changed) before ``step`` stops replaying and runs the update eagerly.
_REPLAY_MISSES = 8
_REPLAY_UPDATES = [True]


@contextlib.contextmanager
def eager_updates() -> Iterator[None]:
    """Within it, ``step()`` traces the update as part of the pending graph instead of replaying
    it, so a whole uncompiled training step is one program (``fusegrad dump`` shows it so)."""
    saved, _REPLAY_UPDATES[0] = _REPLAY_UPDATES[0], False
    try:
        yield
    finally:
        _REPLAY_UPDATES[0] = saved


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


def invalid(message: str, error: type[Exception] = ValueError) -> Exception:
    """The exception torch raises for a bad optimizer argument (``error``), its message naming
    the user's line, as fusegrad's trace-time errors do."""
    return error(with_location(message, user_location()))


def check_lr_tensor(lr: Any) -> None:
    """A learning rate given as a tensor must hold one number (as in torch)."""
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise invalid("Tensor lr must be 1-element")


class Optimizer:
    """Base class: holds ``param_groups`` and ``state``.

    Built-in optimizers implement ``_update(group, p)`` (one parameter's update, traced under
    ``no_grad``) and inherit ``step``; a subclass may instead override ``step`` as in torch.

    Args:
        params: an iterable of Tensors, or of dicts defining parameter groups (``'params'`` plus
            per-group options overriding ``defaults``).
        defaults: the default value of every option of a parameter group.
    """

    #: float options read from ``param_groups`` as runtime inputs (subclasses may add names)
    runtime_options: frozenset[str] = frozenset(
        {"lr", "momentum", "dampening", "weight_decay", "eps", "alpha", "lr_decay"})

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        if isinstance(params, Tensor):
            raise invalid("params argument given to the optimizer should be an iterable of "
                          f"Tensors or dicts, but got {type(params).__name__}", TypeError)
        self.defaults = defaults
        # fusegrad's own optimizers build the same update graph on the step that creates their
        # state as on later steps (a runtime first-step flag, not a Python branch)
        stable = type(self).__module__.startswith("fusegrad.optimlib.")
        self.state: dict[Tensor, dict[str, Any]] = _StateDict(stable)
        self.param_groups: list[dict[str, Any]] = []
        self._scalars: dict[tuple[int, str, str], _Scalar] = {}
        groups = list(params)
        if not groups:
            raise invalid("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own options (unset options take the defaults)."""
        if not isinstance(param_group, dict):
            raise invalid(f"param_group must be a dict, but got {type(param_group).__name__}",
                          TypeError)
        group = ParamGroup(self, dict.items(param_group))
        params = group["params"]
        if isinstance(params, set):
            raise invalid("optimizer parameters need to be organized in ordered collections, "
                          "but the ordering of tensors in sets will change between runs. "
                          "Please use a list instead.", TypeError)
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise invalid(f"parameter group didn't specify a value of required "
                              f"optimization parameter {name}")
            group.setdefault(name, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in group["params"]}) != len(group["params"]):
            raise invalid("optimizer contains a parameter group with duplicate parameters")
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise invalid("optimizer can only optimize Tensors, but one of the params is "
                              f"{type(p).__name__}", TypeError)
            if not p.is_leaf:
                raise invalid("can't optimize a non-leaf Tensor")
            if id(p) in seen:
                raise invalid("some parameters appear in more than one parameter group")
        for p in group["params"]:
            tracer_state.mark_state(p)  # a compiled step may update parameters in place
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: drop them (default) or fill them with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    # assigned even when already None: a compiled step then knows the gradient
                    # is cleared whatever it was before the call
                    p.grad = None
                elif p.grad is not None:
                    if p.grad.requires_grad:
                        p.grad.detach_()
                    p.grad.zero_()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; all updates run as one program.

        A built-in optimizer traces its update once and replays it on later steps (as
        ``fusegrad.compile`` would, with the same guards), so an uncompiled training loop pays
        no per-op Python for the update. The gradients are computed first, as their own program.

        Args:
            closure: re-evaluates the model and returns the loss; called with grad enabled.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        replay = self.__dict__.get("_replay")
        if replay is None and getattr(self.state, "_stable", False) and "_replay" not in self.__dict__:
            # fusegrad's own optimizers build the same update every step: it is traced once and
            # replayed (guarded as fusegrad.compile guards), without running the Python per op
            replay = self._replay = tracer_state.replayed(self._apply_updates)
        if replay is None or tracer_state.tracing() or not _REPLAY_UPDATES[0]:
            self._apply_updates()
        else:
            replay()
            if replay.misses > _REPLAY_MISSES:  # the update keeps changing: stop replaying it
                self._replay = None
        return loss

    def _apply_updates(self) -> None:
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(group, p)
        self._realize_step()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_replay", None)  # a compiled function of this object: made again on demand
        return state

    def _update(self, group: dict[str, Any], p: Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement step() or _update()")

    # ------------------------------------------------------------------ helpers for subclasses
    def scalar(self, group: dict[str, Any], name: str, like: Tensor | str,
               derive: Callable[[dict[str, Any]], Any] | None = None) -> Tensor:
        """A 0-d tensor holding ``group[name]`` (or ``derive(group)``) as a runtime input.

        The buffer keeps its identity across steps, so the compiled update is reused when the
        value changes; the value is written into it (here for eager steps, and before every
        replay of a ``fusegrad.compile``-d step).

        Args:
            group: the parameter group the value belongs to.
            name: the option's name, or a name for a value derived from options.
            like: the dtype, or a Tensor whose dtype the scalar takes.
            derive: computes the value from the group (e.g. ``lambda g: 1 - g['betas'][0]``);
                by default ``group[name]``.
        """
        dtype = like if isinstance(like, str) else like.node.dtype
        key = (id(group), name, dtype)
        s = self._scalars.get(key)
        if s is None:
            s = self._scalars[key] = _Scalar(group, name, derive,
                                             tracer_state.scalar_tensor(0.0, dtype))
        s.refresh()
        if tracer_state.tracing():
            tracer_state.add_replay_hook(("optimizer", id(self)),
                                    _ReplayHook(self, self._graph_options()))
        return s.tensor

    def _runtime(self, group: dict[str, Any], name: str, value: float) -> Any:
        """``group[name]`` (``value``) as a number the tracer reads as a runtime input.

        Eagerly the number is backed by a fresh buffer when an op first reads it; inside a
        ``fusegrad.compile`` trace, by ``self.scalar(group, name)``, which replays refresh.
        """
        cls = RuntimeFloat if type(value) is float else RuntimeInt
        trace = tracer_state.current_trace()
        if trace is None:
            return cls(value)

        def make() -> Tensor:
            if dict.get(group, name) != value:  # changed since it was read: use what was read
                return cls(value).__fusegrad_scalar__
            return self.scalar(group, name, "float64")
        return cls(value, trace, make)

    def _graph_options(self) -> list[tuple]:
        """Per group, the option values that decide the graph's structure (not its data), and
        its parameters (a list extended in place adds updates to the graph)."""
        return [(self._graph_branches(g), tuple(map(id, g["params"])))
                for g in self.param_groups]

    def _graph_branches(self, group: dict[str, Any]) -> tuple:
        """What ``_update`` branches on in ``group``: here its flags (bool, None, str options);
        subclasses add the tests they make on numbers (``weight_decay != 0``)."""
        return tuple(sorted((k, v) for k, v in group.items()
                            if v is None or isinstance(v, (bool, str))))

    def _realize_step(self) -> None:
        """Compute every parameter and state update of this step in one program."""
        tensors = [p for g in self.param_groups for p in g["params"]]
        for st in self.state.values():
            tensors.extend(v for v in st.values() if isinstance(v, Tensor))
        tracer_state.realize(*tensors)

    # ------------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, Any]:
        """``{'state': {index: {...}}, 'param_groups': [{..., 'params': [index, ...]}]}``.

        Parameters are numbered in the order of the groups, as in torch. Tensors in the state
        are detached snapshots: later steps do not change them.
        """
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
        state = {index[id(p)]: {k: (v.detach().clone() if isinstance(v, Tensor) else v)
                                for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore options and state saved by ``state_dict`` (parameters matched by position).

        State tensors are copied, cast to their parameter's dtype (``step`` stays float32).
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise invalid("loaded state dict has a different number of parameter groups")
        for own, saved in zip(self.param_groups, groups):
            if len(own["params"]) != len(saved["params"]):
                raise invalid("loaded state dict contains a parameter group that doesn't "
                              "match the size of optimizer's group")
        by_index = {int(i): p for own, saved in zip(self.param_groups, groups)
                    for i, p in zip(saved["params"], own["params"])}
        for group, new in zip(self.param_groups, groups):
            for k, v in new.items():
                if k != "params":
                    group[k] = deepcopy(v)
        self.state.clear()  # compiled steps holding the state tensors replaced here forget
        for k, s in state_dict["state"].items():
            p = by_index[int(k)]
            self.state[p] = {name: _state_copy(name, v, p) for name, v in s.items()}

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(k for k in g if k != "params"):
                lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


def _state_copy(name: str, value: Any, p: Tensor) -> Any:
    if not isinstance(value, Tensor):
        return deepcopy(value)
    arr = np.array(value.detach().numpy(), copy=True)
    if name != "step" and arr.dtype.kind == "f":
        arr = arr.astype(p.node.dtype)
    return Tensor(arr)


def zeros_state(p: Tensor, fill: float = 0.0) -> Tensor:
    """A state tensor shaped like ``p``, held in a buffer from the start.

    A buffer (rather than a traced ``zeros_like`` constant) gives the first step the same graph
    as every later one, so the optimizer compiles one program instead of two.
    """
    return Tensor(np.full(p.node.shape, fill, dtype=p.node.dtype), device=p.device)


def step_counter(p: Tensor | None = None) -> Tensor:
    """``state['step']``: a 0-d float32 tensor, as in torch, on ``p``'s device (so that a step on
    a GPU writes no host memory)."""
    return Tensor(np.zeros((), dtype=np.float32), device=p.device if p is not None else None)


def lerp_(t: Tensor, end: Tensor, weight: Tensor, small: bool) -> Tensor:
    """``t.lerp_(end, weight)`` with torch's CPU formula (``small``: |weight| < 0.5)."""
    if small:
        return t.add_(weight * (end - t))
    return t.copy_(end - (end - t) * (1 - weight))


def check_unsupported(differentiable: bool) -> None:
    if differentiable:
        raise invalid("differentiable=True is not supported: optimizer steps are not "
                      "recorded for autograd")


@dataclass
class _Scalar:
    """One runtime scalar: where its value comes from and the 0-d tensor that holds it."""

    group: dict[str, Any]
    name: str
    derive: Callable[[dict[str, Any]], Any] | None
    tensor: Tensor
    last: Any = None  # the value the buffer holds (skips rewriting it when nothing changed)

    def refresh(self) -> None:
        group = self.group
        if self.derive is None:
            v = dict.__getitem__(group, self.name)
        else:  # read plain values (runtime wrappers would trace tensor ops for nothing)
            v = self.derive(dict(dict.items(group)) if isinstance(group, ParamGroup) else group)
        last = self.last
        if v == last and type(v) is type(last) and (v != 0 or str(v) == str(last)):
            return  # unchanged (0.0 and -0.0 compare equal, hence the str check)
        tracer_state.set_scalar(self.tensor, v)
        self.last = v if v == v else None


class _ReplayHook:
    """Run before each replay of a compiled step: refresh the scalars from ``param_groups``."""

    def __init__(self, optimizer: Optimizer, traced: list[tuple]):
        self.optimizer = optimizer
        self.traced = traced
        self.writes = -1               # ParamGroup.writes when last refreshed
        self.lists: list[list] = []    # the groups' parameter lists then, and their total size
        self.count = -1

    def __call__(self) -> None:
        opt = self.optimizer
        if ParamGroup.writes == self.writes and len(opt.param_groups) == len(self.lists) \
                and sum(map(len, self.lists)) == self.count:
            return  # no option was written since the last call: the scalars are current
        if opt._graph_options() != self.traced:
            # an option the update's graph is built from (amsgrad, nesterov, ...) changed: the
            # compiled program cannot follow, so the step is traced again
            raise tracer_state.Retrace(f"{type(opt).__name__} options changed: {self.traced} -> "
                                  f"{opt._graph_options()}")
        for s in opt._scalars.values():
            s.refresh()
        self.writes = ParamGroup.writes
        self.lists = [dict.__getitem__(g, "params") for g in opt.param_groups]
        self.count = sum(map(len, self.lists))


class _WritesThroughSetitem(dict):
    """A dict whose ``setdefault`` and ``update`` write through ``__setitem__``."""

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v


class ParamGroup(_WritesThroughSetitem):
    """One entry of ``optimizer.param_groups``: a dict of options (and ``'params'``).

    Reading an option of ``optimizer.runtime_options`` that holds a number gives a
    :class:`~fusegrad.optimlib.runtime.RuntimeFloat` (or ``RuntimeInt``), which traced ops read
    as a runtime input; values are stored plain (runtime numbers written back are unwrapped), so
    ``items()``, ``copy()``, ``state_dict``, ``deepcopy`` and pickling see plain numbers (the
    last two give a plain ``dict``, as in torch).
    """

    writes = 0  # counts writes to any group: replays refresh their scalars only after a write

    def __init__(self, optimizer: Optimizer | None = None, items: Any = ()) -> None:
        super().__init__()
        ParamGroup.writes += 1
        self._optimizer = weakref.ref(optimizer) if optimizer is not None else None
        for k, v in items:
            dict.__setitem__(self, k, plain(v))

    def __getitem__(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        t = type(value)
        if (t is float or t is int) and self._optimizer is not None:
            opt = self._optimizer()
            if opt is not None and key in opt.runtime_options:
                return opt._runtime(self, key, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 (self.get is this)

    def __setitem__(self, key: Any, value: Any) -> None:
        ParamGroup.writes += 1
        dict.__setitem__(self, key, plain(value))

    def __delitem__(self, key: Any) -> None:
        ParamGroup.writes += 1
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        ParamGroup.writes += 1
        return dict.pop(self, key, *default)

    def clear(self) -> None:
        ParamGroup.writes += 1
        dict.clear(self)


    def __ior__(self, other: Any) -> Self:
        self.update(other)
        return self

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return (dict, (dict(dict.items(self)),))

    def __reduce__(self) -> tuple:
        return self.__reduce_ex__(2)

    def __copy__(self) -> dict:
        return dict(dict.items(self))

    def __deepcopy__(self, memo: dict) -> dict:
        return deepcopy(dict(dict.items(self)), memo)


class _ParamState(_WritesThroughSetitem):
    """One parameter's state: tensors put in it are declared as state a compiled step updates.

    Inside a compiled function's trace, a new entry from an optimizer that is not fusegrad's
    own (its first step may branch on the state being absent) has the call traced again once
    the state exists; an entry replaced by another tensor makes the function unreplayable."""

    def __init__(self, stable: bool = False):
        super().__init__()
        self._stable = stable  # fusegrad's optimizers build the same graph before and after

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, Tensor):
            tracer_state.mark_state(value)
        old = self.get(key)
        if old is None and not self._stable:
            tracer_state.note_state_created()
        elif isinstance(old, Tensor) and old is not value:
            tracer_state.replaced(old, f"optimizer state {key!r}")
        elif old is not value and not self._stable:
            # a Python value the body changes (a step count): a replay would keep the traced one
            tracer_state.note_python_state_changed(f"optimizer state {key!r} (a Python value)")
        super().__setitem__(key, value)



def _retire(state: dict[str, Any]) -> None:
    """A parameter's state is being replaced: compiled steps holding its tensors forget."""
    for key, value in state.items():
        if isinstance(value, Tensor):
            tracer_state.replaced(value, f"optimizer state {key!r}")


class _StateDict(dict):
    """``optimizer.state``: keyed by parameter identity (Tensor == is elementwise)."""

    def __init__(self, stable: bool = False) -> None:
        super().__init__()
        self._keys: dict[int, Tensor] = {}
        self._stable = stable

    def __getitem__(self, p: Tensor) -> dict[str, Any]:
        if id(p) not in self._keys:
            self._keys[id(p)] = p
            super().__setitem__(id(p), _ParamState(self._stable))
        return super().__getitem__(id(p))

    def __setitem__(self, p: Tensor, value: dict[str, Any]) -> None:
        if id(p) in self._keys:
            _retire(super().__getitem__(id(p)))
        state = _ParamState(self._stable)
        for k, v in value.items():
            state[k] = v
        self._keys[id(p)] = p
        super().__setitem__(id(p), state)

    def __delitem__(self, p: Tensor) -> None:
        _retire(super().__getitem__(id(p)))
        self._keys.pop(id(p))
        super().__delitem__(id(p))

    def __contains__(self, p: object) -> bool:
        return id(p) in self._keys

    def get(self, p: Tensor, default: Any = None) -> Any:
        return super().get(id(p), default)

    def items(self):
        return [(self._keys[k], v) for k, v in super().items()]

    def keys(self):
        return list(self._keys.values())

    def __iter__(self):
        return iter(self.keys())

    def clear(self) -> None:
        for state in self.values():
            _retire(state)
        super().clear()
        self._keys.clear()
