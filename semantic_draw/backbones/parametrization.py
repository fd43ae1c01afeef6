"""What a network's raw output means: the step from it to (x0_hat, eps_hat) (ALGORITHM.md section 1).

Every backbone works in one form, x_t = alpha x0 + sigma eps, with no extra input scaling (Euler's VE input scaling
is folded into alpha and sigma by the schedule). An adapter names its parametrization by ``prediction_type``:
- "epsilon" (SD1.5, SDXL): the output is eps_hat; x0_hat = (x - sigma eps_hat) / alpha, then LCM's boundary
  condition x0_hat <- c_out x0_hat + c_skip x when the schedule carries it;
- "flow" (SD3): the output is the velocity v = eps - x0; x0_hat = x - sigma v, eps_hat = x + (1 - sigma) v.
"""
from __future__ import annotations

import torch

from ..schedule import Coefficients


class Epsilon:
    name = "epsilon"

    @staticmethod
    def split(out: torch.Tensor, x: torch.Tensor, k: Coefficients) -> tuple[torch.Tensor, torch.Tensor]:
        eps = out
        x0 = (x - k.sigma * eps) / k.alpha
        if k.c_skip is not None:
            x0 = k.c_out * x0 + k.c_skip * x
        return x0, eps


class Flow:
    name = "flow"

    @staticmethod
    def split(out: torch.Tensor, x: torch.Tensor, k: Coefficients) -> tuple[torch.Tensor, torch.Tensor]:
        return x - k.sigma * out, x + (1.0 - k.sigma) * out


PARAMETRIZATIONS = {p.name: p for p in (Epsilon, Flow)}
