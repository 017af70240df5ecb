"""Adagrad: per-element learning rates from the sum of squared gradients."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..tracer.tensor import Tensor
from .optimizer import Optimizer, check_lr_tensor, check_unsupported, invalid, step_counter, zeros_state


class Adagrad(Optimizer):
    """``torch.optim.Adagrad`` (its single-tensor formulas, dense gradients).

    State is created for every parameter when the optimizer is built, as in torch. The decayed
    learning rate ``lr / (1 + (step - 1) * lr_decay)`` is computed in the graph, in float64,
    from ``state['step']``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        lr_decay: learning-rate decay per step.
        weight_decay: L2 penalty added to the gradient.
        initial_accumulator_value: starting value of the sum of squared gradients.
        eps: added to the denominator.
        maximize: ascend the objective instead of descending.
        foreach, fused: accepted for compatibility.
        differentiable: must be False.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None):
        check_lr_tensor(lr)
        if not 0.0 <= lr:
            raise invalid(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise invalid(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise invalid(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise invalid(f"Invalid initial_accumulator_value value: "
                          f"{initial_accumulator_value}")
        if not 0.0 <= eps:
            raise invalid(f"Invalid epsilon value: {eps}")
        check_unsupported(differentiable)
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(group, p)

    def _init_state(self, group: dict[str, Any], p: Tensor) -> None:
        state = self.state[p]
        state["step"] = step_counter(p)
        state["sum"] = zeros_state(p, group["initial_accumulator_value"])

    def _update(self, group: dict[str, Any], p: Tensor) -> None:
        state = self.state[p]
        if not state:  # a parameter of a group added after construction
            self._init_state(group, p)
        step = state["step"].add_(1)
        grad = p.grad if not group["maximize"] else -p.grad
        if group["weight_decay"] != 0:
            grad = grad + self.scalar(group, "weight_decay", p) * p

        decay = 1 + (step.double() - 1) * self.scalar(group, "lr_decay", "float64")
        clr = (self.scalar(group, "lr", "float64") / decay).to(p.dtype)
        state_sum = state["sum"].add_(grad * grad)
        std = state_sum.sqrt() + self.scalar(group, "eps", p)
        p.add_(-clr * grad / std)

    def _graph_branches(self, group: dict[str, Any]) -> tuple:
        return super()._graph_branches(group) + (group["weight_decay"] != 0,)
