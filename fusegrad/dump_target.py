"""What ``fusegrad dump TARGET`` compiles: a zoo workload, a function in a user's file, or the demo.

TARGET is a name from ``fusegrad.bench.zoo.WORKLOADS`` or ``path/to/file.py:function``. The
function takes no arguments and returns one of:

* ``(model, inputs)``: the forward ``model(*inputs)``;
* ``(model, inputs, loss_fn, optimizer)``: with ``--train``, the step
  ``optimizer.zero_grad(); loss_fn(model(*inputs)).backward(); optimizer.step()``;
* ``(model, inputs, loss_fn, optimizer, target)``: the same with ``loss_fn(model(*inputs), target)``
  (a ``torch.nn``-style loss).

``inputs`` is a tuple or list of positional arguments, or one Tensor. Without ``--train`` the
forward of any of them is dumped. A zoo workload's ``--train`` step is its own
``Built.step`` (its loss, target and optimizer).

This file counts as user code for provenance (``tracer/provenance.py``): the loss and the
optimizer update of a user file's step point at the lines of ``_train_step`` below.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

SHAPES = ("(model, inputs) for the forward, or (model, inputs, loss_fn, optimizer) or (model, "
          "inputs, loss_fn, optimizer, target) for a training step, where inputs is a tuple of "
          "positional arguments or one tensor, loss_fn(output) or loss_fn(output, target) "
          "returns the loss, and optimizer has zero_grad() and step()")


class TargetError(Exception):
    """A TARGET that cannot be dumped; the message is one paragraph naming what was expected."""


@dataclass
class Target:
    """A program to dump: ``step()`` traces it and realizes it (it is called twice, and the
    second call, the steady state, is the one dumped)."""

    label: str
    step: Callable[[], Any]
    train: bool


def load_target(spec: str, train: bool) -> Target:
    """The Target named by ``spec`` (a zoo name or ``path/to/file.py:function``).

    Raises:
        TargetError: the file, the function or the zoo name does not exist, the function fails
            or returns something else than the documented tuples.
    """
    from .bench import zoo
    if spec in zoo.WORKLOADS:
        return _zoo_target(spec, train)
    path, sep, func = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not func:
        raise TargetError(
            f"TARGET {spec!r} is neither a zoo workload ({', '.join(zoo.WORKLOADS)}) nor "
            "path/to/file.py:function naming a function that takes no arguments and returns "
            f"{SHAPES}.")
    return _file_target(spec, path, func, train)


def demo_target(batch: int) -> Target:
    """The built-in demo's training step (``fusegrad dump`` without TARGET): the guide's MLP on
    synthetic batches of ``batch`` examples."""
    from . import demo
    from .tracer.creation import from_numpy
    import fusegrad as fg
    import fusegrad.nnlib as nn
    import fusegrad.optimlib as optim

    fg.manual_seed(0)
    model = demo.make_mlp()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    step = demo.make_step(model, opt, nn.CrossEntropyLoss())
    batches = iter(demo.synthetic_batches(2, batch))

    def run() -> Any:
        xb, yb = next(batches)
        return step(from_numpy(xb), from_numpy(yb))
    return Target(f"the demo training step (batch {batch})", run, train=True)


def run_step(target: Target) -> Any:
    """Call ``target.step()``, turning any failure into a TargetError that names the target."""
    try:
        return target.step()
    except Exception as e:  # noqa: BLE001 - any failure of the user's code is reported, not raised
        what = "training step" if target.train else "forward"
        raise TargetError(
            f"{target.label}: running its {what} (tracing it, then compiling and running the "
            f"program) failed with {type(e).__name__}: {e}".replace("\n", " ")) from e


# ----------------------------------------------------------------------------- zoo workloads
def _zoo_target(name: str, train: bool) -> Target:
    import fusegrad
    from .bench import zoo
    built = zoo.build(name, fusegrad, small=True)
    if train:
        return Target(f"{name} (zoo, small, training step)", built.step, train=True)
    return Target(f"{name} (zoo, small, forward)", lambda: _realized(built.forward()), train=False)


# ----------------------------------------------------------------------------- user files
def _file_target(spec: str, path: str, func: str, train: bool) -> Target:
    fn = getattr(_import_file(spec, path), func, None)
    if not callable(fn):
        raise TargetError(
            f"TARGET {spec!r}: {path} defines no function {func!r}. Name a function that takes "
            f"no arguments and returns {SHAPES}.")
    try:
        made = fn()
    except Exception as e:  # noqa: BLE001 - the user's code failing is reported as such
        raise TargetError(f"TARGET {spec!r}: calling {func}() failed with {type(e).__name__}: "
                          f"{e}. It should take no arguments and return {SHAPES}.") from e
    model, inputs, loss_fn, optimizer, loss_target = _unpack(spec, made, train)
    if not train:
        return Target(f"{spec} (forward)", lambda: _realized(model(*inputs)), train=False)

    def step() -> Any:
        return _train_step(model, inputs, loss_fn, optimizer, loss_target)
    return Target(f"{spec} (training step)", step, train=True)


def _import_file(spec: str, path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise TargetError(f"TARGET {spec!r}: there is no file {path!r}. Give "
                          f"path/to/file.py:function for a function that returns {SHAPES}.")
    name = "_fusegrad_dump_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)  # as `python file.py` would: the file may import its neighbours
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's module failing to import is reported
        raise TargetError(f"TARGET {spec!r}: importing {path} failed with {type(e).__name__}: "
                          f"{e}. The file should define a function returning {SHAPES}.") from e
    finally:
        sys.path.remove(folder)
    return module


def _unpack(spec: str, made: Any, train: bool) -> tuple[Any, tuple, Any, Any, tuple]:
    """``made`` as (model, inputs, loss_fn, optimizer, (target,) or ()), checked."""
    from .tracer.tensor import Tensor

    def fail(why: str) -> TargetError:
        return TargetError(f"TARGET {spec!r} returned {why}; expected {SHAPES}.")

    if not isinstance(made, (tuple, list)) or len(made) not in (2, 4, 5):
        size = f" of length {len(made)}" if isinstance(made, (tuple, list)) else ""
        raise fail(f"a {type(made).__name__}{size}")
    model, inputs, *rest = made
    if not callable(model):
        raise fail(f"a model of type {type(model).__name__}, which is not callable")
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    if not isinstance(inputs, (tuple, list)):
        raise fail(f"inputs of type {type(inputs).__name__}")
    if train and not rest:
        raise TargetError(f"TARGET {spec!r} returned (model, inputs), which has no loss or "
                          "optimizer: --train needs (model, inputs, loss_fn, optimizer) or "
                          "(model, inputs, loss_fn, optimizer, target). Drop --train to dump "
                          "the forward.")
    loss_fn, optimizer, *loss_target = rest or (None, None)
    if rest and not callable(loss_fn):
        raise fail(f"a loss_fn of type {type(loss_fn).__name__}, which is not callable")
    if rest and not (callable(getattr(optimizer, "zero_grad", None))
                     and callable(getattr(optimizer, "step", None))):
        raise fail(f"an optimizer of type {type(optimizer).__name__} without zero_grad() "
                   "and step()")
    return model, tuple(inputs), loss_fn, optimizer, tuple(loss_target)


def _train_step(model: Any, inputs: tuple, loss_fn: Any, optimizer: Any,
                loss_target: tuple) -> Any:
    optimizer.zero_grad()
    loss = loss_fn(model(*inputs), *loss_target)
    loss.backward()
    optimizer.step()
    return loss


def _realized(out: Any) -> Any:
    """``out`` with its tensors computed (one program); a TypeError if it holds none."""
    import fusegrad
    from .tracer import pytree
    tensors: list[Any] = []
    pytree.flatten(out, tensors)
    if not tensors:
        raise TypeError(f"the model returned {type(out).__name__}, which holds no tensor")
    fusegrad.realize(*tensors)
    return out
