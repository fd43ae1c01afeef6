"""Noise schedules in one form for every backbone: x_t = alpha_t * x0 + sigma_t * eps (ALGORITHM.md section 1).

A schedule is a short table built from the pipeline's own diffusers scheduler config: the conditioning value the
model expects at each step (``timesteps``), the ``alphas`` and ``sigmas`` of each level (index T is the clean
level: alpha 1, sigma 0), the re-noising ``eta`` (1 for stochastic samplers, 0 for deterministic ones) and, for
LCM, the boundary-condition coefficients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers import (DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, LCMScheduler)

from .errors import OptionError
from .options import check_choice

SAMPLERS = ("lcm", "ddim", "euler", "flow", "flash")
# Reference SD1.5 + LCM schedule: indices [0, 4, 12, 25, 37] of a 50-step LCM grid.
LCM_REFERENCE_TIMESTEPS = (999, 919, 759, 499, 259)


@dataclass
class Coefficients:
    """Per-item schedule values at the items' steps, each [N, 1, 1, 1] (c_skip / c_out: LCM only, else None)."""
    alpha: torch.Tensor
    sigma: torch.Tensor
    c_skip: torch.Tensor | None = None
    c_out: torch.Tensor | None = None


@dataclass
class SamplerSettings:
    """Which schedule to build (see build_schedule) and how masks are quantized."""
    sampler: str
    steps: int | None = None
    timesteps: tuple | None = None
    spacing: str | None = None
    eta: float | None = None
    quantize: str = "discrete"


@dataclass
class Schedule:
    name: str
    timesteps: torch.Tensor          # [T] float64, what the model is conditioned on at each step
    alphas: torch.Tensor             # [T + 1] float64
    sigmas: torch.Tensor             # [T + 1] float64, decreasing, sigmas[T] == 0
    eta: float                       # 1: fresh noise at each re-noising (LCM, Flash); 0: deterministic (DDIM, Euler)
    prediction_type: str             # "epsilon" or "flow"
    c_skip: torch.Tensor | None = None   # [T] LCM boundary condition, or None
    c_out: torch.Tensor | None = None

    def table(self, name: str, device) -> torch.Tensor:
        """A float32 copy of ``timesteps`` / ``alphas`` / ``sigmas`` / ``c_skip`` / ``c_out`` on ``device``, cached:
        the stream asks for these every frame."""
        cache = self.__dict__.setdefault("_tables", {})
        key = (name, str(device))
        if key not in cache:
            cache[key] = getattr(self, name).to(device=device, dtype=torch.float32)
        return cache[key]

    @property
    def key(self) -> tuple:
        """What tells two schedules apart for a network call (its name and timesteps), made once: calls of several
        sessions are joined only when their keys agree (shared_calls.py), and that is asked every frame."""
        cache = self.__dict__
        if "_key" not in cache:
            cache["_key"] = (self.name, tuple(self.timesteps.tolist()))
        return cache["_key"]

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    @property
    def noise_levels(self) -> torch.Tensor:
        """sigma_0 > ... > sigma_{T-1} > sigma_T = 0, the thresholds of per-step mask quantization."""
        return self.sigmas

    def coefficients(self, step: torch.Tensor, device) -> Coefficients:
        """The values at step indices ``step`` ([N] long) that turn a raw model output into (x0_hat, eps_hat)."""
        shape = (-1, 1, 1, 1)
        lcm = self.c_skip is not None
        return Coefficients(self.table("alphas", device)[step].view(shape),
                            self.table("sigmas", device)[step].view(shape),
                            self.table("c_skip", device)[step].view(shape) if lcm else None,
                            self.table("c_out", device)[step].view(shape) if lcm else None)

    def renoise(self, x0: torch.Tensor, eps: torch.Tensor, z: torch.Tensor | None, level: torch.Tensor,
                eta: float | None = None) -> torch.Tensor:
        """alpha_l x0 + sigma_l (sqrt(1 - eta^2) eps + eta z) at levels ``level`` ([N] long, T means clean)."""
        eta = self.eta if eta is None else eta
        shape = (-1,) + (1,) * (x0.dim() - 1)
        alpha = self.table("alphas", x0.device)[level].view(shape)
        sigma = self.table("sigmas", x0.device)[level].view(shape)
        noise = eps if eta == 0 else (1.0 - eta * eta) ** 0.5 * eps + eta * z
        return alpha * x0 + sigma * noise


def build_schedule(sampler: str, scheduler_config: dict, prediction_type: str, steps: int | None = None,
                   timesteps: Sequence[float] | None = None, eta: float | None = None,
                   spacing: str | None = None) -> Schedule:
    """Build the table for ``sampler`` ("lcm", "ddim", "euler", "flow", "flash") from a diffusers scheduler config.

    ``timesteps`` overrides the step grid (for example LCM_REFERENCE_TIMESTEPS); ``spacing`` is diffusers'
    timestep_spacing ("leading", "trailing", ...) for ddim/euler; ``eta`` overrides the sampler's default.
    """
    check_choice(sampler, "sampler", SAMPLERS)
    if steps is None and timesteps is None:
        raise OptionError("A schedule needs a number of steps.")
    if steps is not None and steps < 1:
        raise OptionError(f"The number of steps must be at least 1, not {steps}.")
    cfg = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    f64 = torch.float64
    if sampler in ("flow", "flash"):
        if prediction_type != "flow":
            raise OptionError(f"Sampler {sampler!r} needs a flow-matching model (SD3).")
        sched = FlowMatchEulerDiscreteScheduler.from_config(cfg)
        if timesteps is not None:
            sched.set_timesteps(sigmas=[float(t) / 1000.0 for t in timesteps])
        else:
            sched.set_timesteps(steps)
        sig = sched.sigmas.to(f64)[: len(sched.timesteps)]
        sigmas = torch.cat([sig, torch.zeros(1, dtype=f64)])
        return Schedule(sampler, sched.timesteps.to(f64), 1.0 - sigmas, sigmas,
                        (1.0 if sampler == "flash" else 0.0) if eta is None else eta, "flow")
    if prediction_type != "epsilon":
        raise OptionError(f"Sampler {sampler!r} needs an epsilon-prediction model (SD1.5 or SDXL).")
    if sampler == "lcm":
        sched = LCMScheduler.from_config(cfg)
        if timesteps is not None:
            ts = torch.tensor([float(t) for t in timesteps], dtype=f64)
        else:
            sched.set_timesteps(steps, original_inference_steps=50)
            ts = sched.timesteps.to(f64)
    else:
        cls = DDIMScheduler if sampler == "ddim" else EulerDiscreteScheduler
        extra = {"timestep_spacing": spacing} if spacing else {}
        sched = cls.from_config(cfg, **extra)
        if timesteps is not None:
            ts = torch.tensor([float(t) for t in timesteps], dtype=f64)
        else:
            sched.set_timesteps(steps)
            ts = sched.timesteps.to(f64)
    abar = sched.alphas_cumprod.to(f64)
    # Interpolate abar for fractional timesteps (Euler grids may be fractional).
    lo = ts.floor().long().clamp(0, len(abar) - 1)
    hi = (lo + 1).clamp(max=len(abar) - 1)
    frac = ts - lo.to(f64)
    a = abar[lo] * (1 - frac) + abar[hi] * frac
    alphas = torch.cat([a.sqrt(), torch.ones(1, dtype=f64)])
    sigmas = torch.cat([(1 - a).sqrt(), torch.zeros(1, dtype=f64)])
    c_skip = c_out = None
    if sampler == "lcm":
        scaled = ts * float(cfg.get("timestep_scaling", 10.0))
        sigma_data = 0.5
        c_skip = sigma_data ** 2 / (scaled ** 2 + sigma_data ** 2)
        c_out = scaled / (scaled ** 2 + sigma_data ** 2) ** 0.5
    default_eta = 1.0 if sampler == "lcm" else 0.0
    return Schedule(sampler, ts, alphas, sigmas, default_eta if eta is None else eta, "epsilon", c_skip, c_out)
