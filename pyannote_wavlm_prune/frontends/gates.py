"""Hard-concrete gates (Louizos et al., 2018): one learnable on/off mask per group of units.

A gate knows nothing of where its mask is used; `gating.py` applies masks to WavLM.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class HardConcreteGate(nn.Module):
    """A group of `num_units` hard-concrete gates

    Train mode: each call draws one mask sample z in [0, 1] (exactly 0 or 1 with positive
    probability), differentiable in `log_alpha`. Eval mode: the deterministic mask of the
    L0 literature: the round(E||z||_0) units with the largest sigmoid(0.8 log_alpha / beta)
    keep that soft value, the others are 0.

    Parameters
    ----------
    num_units : int
        Number of units in the group (n). May be 0: the layer of an already pruned network
        whose units are all gone keeps an empty group, so that groups stay one per layer.
    init_drop_rate : float, optional
        p in log_alpha ~ N(log((1 - p) / p), 0.01^2): about the initial probability of a
        closed unit. Defaults to 0.01 (almost all open).
    beta : float, optional
        Temperature. Defaults to 2/3.
    left, right : float, optional
        Stretch interval (l, r) of the concrete distribution. Default to -0.1 and 1.1.
    eps : float, optional
        Uniform noise is drawn in (eps, 1 - eps). Defaults to 1e-6.
    min_units : int, optional
        Units the evaluation mask keeps however closed the gates are (those of largest
        score): 1 for a CNN layer, which cannot lose every channel. Defaults to 0.
    """

    def __init__(
        self,
        num_units: int,
        init_drop_rate: float = 0.01,
        beta: float = 2.0 / 3.0,
        left: float = -0.1,
        right: float = 1.1,
        eps: float = 1e-6,
        min_units: int = 0,
    ):
        super().__init__()
        if num_units < 0:
            raise ValueError(f"num_units={num_units}: expected a number of units >= 0.")
        if not 0.0 < init_drop_rate < 1.0:
            raise ValueError(f"init_drop_rate={init_drop_rate}: expected a probability in (0, 1).")
        if not left < 0.0 < 1.0 < right:
            raise ValueError(f"(left, right)=({left}, {right}): expected left < 0 and right > 1.")
        if not 0 <= min_units <= num_units:
            raise ValueError(f"min_units={min_units}: expected a number of units in [0, {num_units}].")
        self.num_units = num_units
        self.min_units = min_units
        self.beta = beta
        self.left = left
        self.right = right
        self.eps = eps
        mean = math.log((1.0 - init_drop_rate) / init_drop_rate)
        self.log_alpha = nn.Parameter(torch.normal(mean, 0.01, size=(num_units,)))

    def extra_repr(self) -> str:
        return f"num_units={self.num_units}, beta={self.beta:.3g}"

    def open_probability(self) -> torch.Tensor:
        """Probability that each unit is non-zero, P(z_i > 0), differentiable

        returns (Tensor): shape (num_units,)
        """
        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.left / self.right))

    def expected_l0(self) -> torch.Tensor:
        """Expected number of open units E||z||_0 (a differentiable scalar tensor)."""
        return self.open_probability().sum()

    def expected_kept(self, probabilities: torch.Tensor | None = None) -> torch.Tensor:
        """Units the evaluation mask keeps, in expectation: E||z||_0, at least `min_units`

        probabilities: `open_probability()` (in another dtype), if already computed.
        """
        probabilities = self.open_probability() if probabilities is None else probabilities
        return probabilities.sum().clamp(min=self.min_units)

    def sample(self) -> torch.Tensor:
        """One stochastic mask, differentiable in log_alpha

        returns (Tensor): shape (num_units,), values in [0, 1]
        """
        uniform = torch.rand_like(self.log_alpha).clamp(self.eps, 1.0 - self.eps)
        logistic = torch.log(uniform) - torch.log1p(-uniform)
        soft = torch.sigmoid((logistic + self.log_alpha) / self.beta)
        return (soft * (self.right - self.left) + self.left).clamp(0.0, 1.0)

    def deterministic_mask(self) -> torch.Tensor:
        """The evaluation mask: top max(min_units, round(E||z||_0)) units keep their soft value
        (at least the smallest positive float, so that a kept unit is never 0), others are 0

        returns (Tensor): shape (num_units,)
        """
        num_kept = max(self.min_units, round(self.expected_l0().item()))
        soft = torch.sigmoid(self.log_alpha / self.beta * 0.8)
        mask = torch.zeros_like(soft)
        if num_kept > 0:
            kept = torch.topk(soft, k=num_kept).indices
            mask[kept] = soft[kept].clamp(min=torch.finfo(soft.dtype).tiny)
        return mask

    def forward(self) -> torch.Tensor:
        """The mask to multiply the units with: a sample in train mode, deterministic in eval

        returns (Tensor): shape (num_units,)
        """
        return self.sample() if self.training else self.deterministic_mask()
