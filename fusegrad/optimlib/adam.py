"""Adam and AdamW: moment estimates, bias corrections from an in-graph step counter, AMSGrad."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..tracer.tensor import Tensor
from .optimizer import Optimizer, check_lr_tensor, check_unsupported, invalid, lerp_, step_counter, zeros_state


class Adam(Optimizer):
    """``torch.optim.Adam`` (its single-tensor formulas).

    Each parameter's update (moments, bias corrections, parameter) fuses into one kernel, plus
    a 0-d kernel that increments ``state['step']``. Bias corrections are computed in float64
    from the step counter, as torch computes them in Python, and cast to the parameter's dtype.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: decay rates of the first and second moment estimates.
        eps: added to the denominator.
        weight_decay: L2 penalty (added to the gradient; decoupled in AdamW).
        amsgrad: keep the maximum of the second moment (``max_exp_avg_sq``).
        maximize: ascend the objective instead of descending.
        decoupled_weight_decay: decay the parameter directly (AdamW) instead of the gradient.
        foreach, capturable, fused: accepted for compatibility.
        differentiable: must be False.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False):
        check_lr_tensor(lr)
        if not 0.0 <= lr:
            raise invalid(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise invalid(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise invalid(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise invalid(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise invalid(f"Invalid weight_decay value: {weight_decay}")
        check_unsupported(differentiable)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                    "capturable": capturable, "differentiable": differentiable, "fused": fused,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def _update(self, group: dict[str, Any], p: Tensor) -> None:
        grad = p.grad if not group["maximize"] else -p.grad
        state = self.state[p]
        if not state:
            state["step"] = step_counter(p)
            state["exp_avg"] = zeros_state(p)
            state["exp_avg_sq"] = zeros_state(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = zeros_state(p)
        step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
        step.add_(1)

        if group["weight_decay"] != 0:
            if group["decoupled_weight_decay"]:
                p.mul_(self.scalar(group, "decay", p, lambda g: 1 - g["lr"] * g["weight_decay"]))
            else:
                grad = grad + self.scalar(group, "weight_decay", p) * p

        lerp_(exp_avg, grad, self.scalar(group, "one_minus_beta1", p, lambda g: 1 - g["betas"][0]),
              _small_weight(group))
        exp_avg_sq.mul_(self.scalar(group, "beta2", p, lambda g: g["betas"][1]))
        exp_avg_sq.add_(self.scalar(group, "one_minus_beta2", p, lambda g: 1 - g["betas"][1]) *
                        grad * grad)

        t = step.double()
        bias_correction1 = 1 - self.scalar(group, "beta1", "float64", lambda g: g["betas"][0]) ** t
        bias_correction2 = 1 - self.scalar(group, "beta2", "float64", lambda g: g["betas"][1]) ** t
        step_size = (self.scalar(group, "lr", "float64") / bias_correction1).to(p.dtype)
        bias_correction2_sqrt = bias_correction2.sqrt().to(p.dtype)

        if group["amsgrad"]:
            max_sq = state["max_exp_avg_sq"]
            max_sq.copy_(max_sq.maximum(exp_avg_sq))
            second = max_sq
        else:
            second = exp_avg_sq
        denom = second.sqrt() / bias_correction2_sqrt + self.scalar(group, "eps", p)
        p.add_(-step_size * exp_avg / denom)

    def _graph_branches(self, group: dict[str, Any]) -> tuple:
        return super()._graph_branches(group) + (group["weight_decay"] != 0,
                                                 _small_weight(group))


def _small_weight(group: dict[str, Any]) -> bool:
    """Which of torch's two lerp formulas updates ``exp_avg`` (weight ``1 - beta1``)."""
    return abs(1 - group["betas"][0]) < 0.5


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (default ``weight_decay=1e-2``).

    Args: as :class:`Adam`.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
