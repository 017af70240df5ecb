"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..tracer.grad_mode import enable_grad, no_grad
from ..tracer.tensor import Tensor
from .optimizer import Optimizer, required


class SGD(Optimizer):
    """``torch.optim.SGD``: the update of each parameter compiles to one fused kernel."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False):
        if lr is not required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(group, p)
        self._realize_step()
        return loss

    def _update(self, group: dict[str, Any], p: Tensor) -> None:
        g = p.grad
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + self.scalar(group, "weight_decay", p) * p
        if group["momentum"] != 0:
            momentum = self.scalar(group, "momentum", p)
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = g.clone()
                state["momentum_buffer"] = Tensor._from_node(buf.node)
            else:
                damp = self.scalar(group, "dampening", p, 1 - group["dampening"])
                buf.mul_(momentum).add_(g * damp)
            buf = state["momentum_buffer"]
            g = g + momentum * buf if group["nesterov"] else buf
        p.add_(-self.scalar(group, "lr", p) * g)
