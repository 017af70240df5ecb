"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tracer import state as tracer_state
from ..tracer.functions import where
from ..tracer.tensor import Tensor
from .optimizer import Optimizer, check_lr_tensor, check_unsupported, invalid, required, zeros_state


class SGD(Optimizer):
    """``torch.optim.SGD`` (its single-tensor formulas): each parameter's update is one kernel.

    torch starts the momentum buffer at the first gradient (``buf = g``) and then updates it
    (``buf = momentum * buf + (1 - dampening) * g``). Here the buffer starts at zero and every
    step runs the update, so the first step has the graph of all later ones: with zero
    dampening, ``momentum * 0 + g`` is ``g`` exactly; with dampening, a 0-d flag kept next to
    the state (not in ``state``, whose keys stay torch's) makes the first step's coefficient 1.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        momentum: momentum factor (0: plain SGD, no ``momentum_buffer`` state).
        dampening: dampening of the momentum.
        weight_decay: L2 penalty added to the gradient.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        maximize: ascend the objective instead of descending.
        foreach, fused: accepted for compatibility; updates are always fused.
        differentiable: must be False.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None):
        check_lr_tensor(lr)
        if lr is not required and lr < 0.0:
            raise invalid(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise invalid(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise invalid(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise invalid("Nesterov momentum requires a momentum and zero dampening")
        check_unsupported(differentiable)
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                    "foreach": foreach, "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)
        self._first_step: dict[int, Tensor] = {}  # id(p) -> 1.0 until p's first momentum step

    def _update(self, group: dict[str, Any], p: Tensor) -> None:
        g = p.grad if not group["maximize"] else -p.grad
        if group["weight_decay"] != 0:
            g = g + self.scalar(group, "weight_decay", p) * p
        if group["momentum"] != 0:
            momentum = self.scalar(group, "momentum", p)
            state = self.state[p]
            fresh = "momentum_buffer" not in state
            if fresh:
                state["momentum_buffer"] = zeros_state(p)
            buf = state["momentum_buffer"].mul_(momentum)
            if group["dampening"] != 0:
                first = self._first_step.get(id(p))
                if first is None:
                    first = self._first_step[id(p)] = tracer_state.mark_state(
                        Tensor(np.array(1.0 if fresh else 0.0, dtype=np.float32)))
                one_minus_damp = self.scalar(group, "one_minus_dampening", p,
                                             lambda g: 1 - g["dampening"])
                buf.add_(where(first > 0, 1.0, one_minus_damp) * g)
                first.zero_()
            else:
                buf.add_(g)
            g = g + momentum * buf if group["nesterov"] else buf
        p.add_(-self.scalar(group, "lr", p) * g)

    def _graph_branches(self, group: dict[str, Any]) -> tuple:
        return super()._graph_branches(group) + (group["weight_decay"] != 0,
                                                 group["momentum"] != 0,
                                                 group["dampening"] != 0)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._first_step.clear()  # loaded momentum buffers have had their first step
