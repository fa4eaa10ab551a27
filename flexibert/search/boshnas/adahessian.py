"""AdaHessian (Yao et al., 2021): Adam whose second moment tracks a Hutchinson estimate of the Hessian diagonal.

The step is close to a damped Newton step, so it is insensitive to how the parameters are scaled. That is
why GOBI uses it on embedding coordinates whose scale depends on the library. No spatial averaging of the
Hessian estimate is done (the original only averages 4-d convolution kernels).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def rademacher_like(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A tensor of independent +-1 entries with the shape and dtype of ``tensor``."""
    bits = torch.randint(0, 2, tensor.shape, generator=generator, device=tensor.device)
    return (2 * bits - 1).to(tensor.dtype)


def hutchinson_diagonal(grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """|H v| for one Rademacher v: the Hessian diagonal exactly when H is diagonal, an estimate otherwise.

    ``grads`` must carry a graph (``backward(create_graph=True)`` or ``autograd.grad(create_graph=True)``).
    """
    probes = [rademacher_like(p, generator) for p in params]
    products = torch.autograd.grad(grads, params, grad_outputs=probes, allow_unused=True)
    # A parameter that its gradient does not depend on (the loss is linear in it) has a zero Hessian block.
    return [torch.zeros_like(p) if product is None else product.abs() for p, product in zip(params, products, strict=True)]


class AdaHessian(torch.optim.Optimizer):
    """Call ``loss.backward(create_graph=True)`` before ``step()``; the Rademacher probes come from ``generator``.

    Update for each parameter p with gradient g and Hessian-diagonal estimate D:
    m <- b1 m + (1-b1) g;  u <- b2 u + (1-b2) D^2;  denom = (sqrt(u / (1-b2^t)))^k + eps;
    p <- p - lr (m / (1-b1^t) / denom + wd p).  Without a generator, one seeded with 0 is used, so runs repeat.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 0.15,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-4,
        weight_decay: float = 0.0,
        hessian_power: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        if lr <= 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"invalid AdaHessian settings: lr={lr}, eps={eps}, weight_decay={weight_decay}")
        if not all(0.0 <= beta < 1.0 for beta in betas) or not 0.0 <= hessian_power <= 1.0:
            raise ValueError(f"invalid AdaHessian settings: betas={betas}, hessian_power={hessian_power}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "hessian_power": hessian_power}
        super().__init__(params, defaults)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        # A gradient without a graph belongs to a parameter the loss is linear in (zero Hessian), unless none has
        # one: then backward() was called without create_graph.
        curved = [p for p in params if p.grad.requires_grad]
        if not curved:
            raise RuntimeError("AdaHessian needs the gradient's graph: call loss.backward(create_graph=True) before step()")
        hessian = {p: torch.zeros_like(p) for p in params}
        hessian.update(zip(curved, hutchinson_diagonal([p.grad for p in curved], curved, self.generator), strict=True))
        with torch.no_grad():
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if not state:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_hessian_diag_sq"] = torch.zeros_like(p)
                    state["step"] += 1
                    t = state["step"]
                    state["exp_avg"].mul_(beta1).add_(p.grad.detach(), alpha=1 - beta1)
                    state["exp_hessian_diag_sq"].mul_(beta2).addcmul_(hessian[p], hessian[p], value=1 - beta2)
                    denom = (state["exp_hessian_diag_sq"] / (1 - beta2**t)).sqrt().pow(group["hessian_power"]).add_(group["eps"])
                    update = state["exp_avg"] / (1 - beta1**t) / denom + group["weight_decay"] * p
                    p.sub_(group["lr"] * update)
        return loss
