"""Natural-Parameter Network layers: propagate a Gaussian (mean, variance) through a network in closed form.

Every weight is itself a Gaussian, so the output variance grows where the data are noisy; trained with
``aleatoric_loss`` the network predicts heteroscedastic (input-dependent) noise. The formulas are the
original BOSHNAS ones: linear moments are exact, the ReLU and sigmoid moments use the
logistic approximation of the Gaussian CDF.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Floors that keep 1/sqrt(s) and ln(s) finite; far below any variance the network produces in practice.
_RELU_VAR_FLOOR = 1e-12
_OUTPUT_VAR_FLOOR = 1e-8


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class NPNLinear(nn.Module):
    """y = x W + b with independent Gaussian x, W, b: the mean and variance of y are exact."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        bound = math.sqrt(6.0 / (in_features + out_features))
        self.weight_mean = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        initial_var = 0.01 * bound * torch.rand(in_features, out_features)
        self.weight_var_raw = nn.Parameter(_inverse_softplus(initial_var))
        self.bias_mean = nn.Parameter(torch.zeros(out_features))
        self.bias_var_raw = nn.Parameter(torch.full((out_features,), -10.0))

    def forward(self, mean: torch.Tensor, var: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``var=None`` is a deterministic input (variance 0), as for the network's first layer."""
        weight_var = F.softplus(self.weight_var_raw)
        out_mean = mean @ self.weight_mean + self.bias_mean
        out_var = (mean * mean) @ weight_var + F.softplus(self.bias_var_raw)
        if var is not None:
            out_var = out_var + var @ (weight_var + self.weight_mean * self.weight_mean)
        return out_mean, out_var


class NPNReLU(nn.Module):
    """Moments of max(0, x) for Gaussian x, with Phi(z) approximated by sigmoid(sqrt(8/pi) z)."""

    def forward(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        var = var.clamp_min(_RELU_VAR_FLOOR)
        std = var.sqrt()
        cdf = torch.sigmoid(math.sqrt(8.0 / math.pi) * mean / std)
        pdf_term = std / math.sqrt(2.0 * math.pi) * torch.exp(-mean * mean / (2.0 * var))
        out_mean = cdf * mean + pdf_term
        out_var = cdf * (mean * mean + var) + mean * pdf_term - out_mean * out_mean
        return out_mean, out_var


class NPNSigmoid(nn.Module):
    """Approximate moments of sigmoid(x) for Gaussian x (probit approximation)."""

    XI_SQ = math.pi / 8.0
    ALPHA = 4.0 - 2.0 * math.sqrt(2.0)
    BETA = -math.log(math.sqrt(2.0) + 1.0)

    def forward(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_mean = torch.sigmoid(mean / torch.sqrt(1.0 + self.XI_SQ * var))
        second_moment = torch.sigmoid(self.ALPHA * (mean + self.BETA) / torch.sqrt(1.0 + self.XI_SQ * self.ALPHA**2 * var))
        return out_mean, (second_moment - out_mean * out_mean).clamp_min(_OUTPUT_VAR_FLOOR)


class NPN(nn.Module):
    """NPNLinear(d,32)-ReLU-NPNLinear(32,32)-ReLU-NPNLinear(32,1)-Sigmoid; returns (mean, variance), each (n,)."""

    def __init__(self, input_dim: int, hidden: int = 32):
        super().__init__()
        self.linears = nn.ModuleList([NPNLinear(input_dim, hidden), NPNLinear(hidden, hidden), NPNLinear(hidden, 1)])
        self.relu = NPNReLU()
        self.sigmoid = NPNSigmoid()

    def variance_parameters(self) -> list[nn.Parameter]:
        """The raw (pre-softplus) weight and bias variances, which the surrogate trains at a higher rate."""
        return [p for linear in self.linears for p in (linear.weight_var_raw, linear.bias_var_raw)]

    def mean_parameters(self) -> list[nn.Parameter]:
        return [p for linear in self.linears for p in (linear.weight_mean, linear.bias_mean)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = self.linears[0](x)
        for linear in self.linears[1:]:
            mean, var = linear(*self.relu(mean, var))
        mean, var = self.sigmoid(mean, var)
        return mean.squeeze(-1), var.squeeze(-1)


def aleatoric_loss(mean: torch.Tensor, var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The original's Gaussian negative log-likelihood with the squared error weighted 10x, averaged over the batch."""
    return (0.5 * (10.0 * (mean - target) ** 2 / var + torch.log(var))).mean()
