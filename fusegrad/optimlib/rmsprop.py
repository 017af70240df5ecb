"""RMSprop: a running average of squared gradients, optionally centered, with momentum."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..tracer.tensor import Tensor
from .optimizer import Optimizer, check_lr_tensor, check_unsupported, invalid, lerp_, step_counter, zeros_state


class RMSprop(Optimizer):
    """``torch.optim.RMSprop`` (its single-tensor formulas): one fused kernel per parameter,
    plus a 0-d kernel for ``state['step']`` (counted, as in torch, though unused by the update).

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        alpha: smoothing constant of the squared-gradient average.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient.
        momentum: momentum factor (> 0 keeps a ``momentum_buffer``).
        centered: normalize by the estimated variance (keeps ``grad_avg``).
        maximize: ascend the objective instead of descending.
        foreach, capturable: accepted for compatibility.
        differentiable: must be False.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False):
        check_lr_tensor(lr)
        if not 0.0 <= lr:
            raise invalid(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise invalid(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise invalid(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise invalid(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise invalid(f"Invalid alpha value: {alpha}")
        check_unsupported(differentiable)
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps,
                    "centered": centered, "weight_decay": weight_decay, "capturable": capturable,
                    "foreach": foreach, "maximize": maximize, "differentiable": differentiable}
        super().__init__(params, defaults)

    def _update(self, group: dict[str, Any], p: Tensor) -> None:
        grad = p.grad if not group["maximize"] else -p.grad
        state = self.state[p]
        if not state:
            state["step"] = step_counter(p)
            state["square_avg"] = zeros_state(p)
            if group["momentum"] > 0:
                state["momentum_buffer"] = zeros_state(p)
            if group["centered"]:
                state["grad_avg"] = zeros_state(p)
        state["step"].add_(1)
        if group["weight_decay"] != 0:
            grad = grad + self.scalar(group, "weight_decay", p) * p

        one_minus_alpha = self.scalar(group, "one_minus_alpha", p, lambda g: 1 - g["alpha"])
        square_avg = state["square_avg"]
        square_avg.mul_(self.scalar(group, "alpha", p)).add_(one_minus_alpha * grad * grad)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            lerp_(grad_avg, grad, one_minus_alpha, abs(1 - group["alpha"]) < 0.5)
            avg = (square_avg + (-1.0 * grad_avg) * grad_avg).sqrt()
        else:
            avg = square_avg.sqrt()
        avg = avg + self.scalar(group, "eps", p)

        neg_lr = -self.scalar(group, "lr", p)
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf.mul_(self.scalar(group, "momentum", p)).add_(grad / avg)
            p.add_(neg_lr * buf)
        else:
            p.add_(neg_lr * grad / avg)

    def _graph_branches(self, group: dict[str, Any]) -> tuple:
        return super()._graph_branches(group) + (group["weight_decay"] != 0,
                                                 group["momentum"] > 0,
                                                 abs(1 - group["alpha"]) < 0.5)
