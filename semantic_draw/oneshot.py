"""One-shot generation of a canvas of any size, and the two MultiDiffusion baselines, on top of the region step."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from .errors import SemanticDrawError
from .sampler import Plan, StepOptions, region_step

METHODS = ("semanticdraw", "multidiffusion-fast", "multidiffusion")


@dataclass
class SamplerSettings:
    """Which schedule to build (see schedule.build_schedule) and how masks are quantized."""
    sampler: str
    steps: int | None = None
    timesteps: tuple | None = None
    spacing: str | None = None
    eta: float | None = None
    quantize: str = "discrete"


@dataclass
class StepInfo:
    """What a callback receives after each step."""
    step: int                 # 0-based index of the step just taken
    steps: int                # number of steps
    x0: torch.Tensor          # [1, C, h, w] aggregated clean estimate
    latent: torch.Tensor      # [1, C, h, w] latent after re-noising (x0 after the last step)
    decode: Callable[[torch.Tensor], object]

    def preview(self):
        """The current clean estimate as a PIL image (cheap tiny-VAE decode when the model has one)."""
        return self.decode(self.x0)


def method_settings(method: str, base: SamplerSettings, opts: StepOptions, family: str,
                    reference_guidance: float = 7.5) -> tuple[SamplerSettings, StepOptions]:
    """Sampler settings and step options of a method, from the model's few-step defaults.

    semanticdraw: few-step sampler with latent pre-averaging, quantized masks and bootstrapping.
    multidiffusion-fast: the same few-step sampler, views averaged after their own scheduler step (the naive mix).
    multidiffusion: the reference, 50 deterministic steps (DDIM; flow-matching Euler for SD3) with full CFG.
    """
    if method == "semanticdraw":
        return base, opts
    naive = replace(opts, aggregation="post", bootstrap_steps=0, leak_sensitivity=None, centering=False)
    if method == "multidiffusion-fast":
        return replace(base, quantize="none"), naive
    if method == "multidiffusion":
        sampler = "flow" if family == "sd3" else "ddim"
        settings = SamplerSettings(sampler, steps=50, spacing=None if sampler == "flow" else "leading",
                                   quantize="none")
        return settings, replace(naive, guidance=reference_guidance, guidance_mode="full")
    raise SemanticDrawError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")


def initial_latent(plan: Plan, bg_noise: torch.Tensor, edit: bool) -> torch.Tensor:
    """Pure noise for text-to-image; the background latent noised to the first level when editing."""
    if not edit:
        return bg_noise.clone()
    level = torch.zeros(1, dtype=torch.long, device=bg_noise.device)
    return plan.schedule.renoise(plan.z_bg, bg_noise, None, level, eta=0.0)


def sample(model_fn, plan: Plan, opts: StepOptions, generator: torch.Generator, *, edit: bool,
           callback: Callable[[StepInfo], None] | None = None,
           decode: Callable[[torch.Tensor], object] | None = None) -> torch.Tensor:
    """Run every step of the schedule on one canvas; returns the final clean latent [1, C, h, w]."""
    shape = (1,) + tuple(plan.z_bg.shape[1:])
    dev = plan.z_bg.device
    bg_noise = torch.randn(shape, generator=generator).to(dev)
    x = initial_latent(plan, bg_noise, edit)
    total = plan.schedule.steps
    for i in range(total):
        steps = torch.tensor([i])
        fresh = torch.randn(shape, generator=generator).to(dev)
        res = region_step(model_fn, plan, opts, x, steps, bg_noise, generator=generator, noise=fresh)
        x = res.x_next
        if callback is not None:
            callback(StepInfo(i, total, res.x0, res.x_next, decode))
    return x
