"""One-shot generation of a canvas of any size, and the two MultiDiffusion baselines, on top of the region step."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from .backbones.registry import Family
from .denoiser import Denoiser, Padded
from .noise import NoiseSource
from .plan import Plan
from .options import StepOptions, check_choice
from .sampler import most_call_items, region_step
from .schedule import SamplerSettings

METHODS = ("semanticdraw", "multidiffusion-fast", "multidiffusion")


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


def method_settings(method: str, base: SamplerSettings, opts: StepOptions,
                    family: Family) -> tuple[SamplerSettings, StepOptions]:
    """Sampler settings and step options of a method, from the model's few-step defaults.

    semanticdraw: few-step sampler with latent pre-averaging, quantized masks and bootstrapping.
    multidiffusion-fast: the same few-step sampler, views averaged after their own scheduler step (the naive mix).
    multidiffusion: the family's reference, 50 deterministic steps (DDIM; flow-matching Euler for SD3) with full CFG.
    """
    check_choice(method, "method", METHODS)     # a string of METHODS (an array is no method)
    if method == "semanticdraw":
        return base, opts
    naive = replace(opts, aggregation="post", bootstrap_steps=0, leak_sensitivity=None, centering=False)
    if method == "multidiffusion-fast":
        return replace(base, quantize="none"), naive
    return family.reference, replace(naive, guidance=family.reference_guidance, guidance_mode="full")


def initial_latent(plan: Plan, bg_noise: torch.Tensor, edit: bool) -> torch.Tensor:
    """Pure noise for text-to-image; the background latent noised to the first level when editing."""
    if not edit:
        return bg_noise.clone()
    level = torch.zeros(1, dtype=torch.long, device=bg_noise.device)
    return plan.schedule.renoise(plan.z_bg, bg_noise, None, level, eta=0.0)


def step_shapes(plan: Plan, opts: StepOptions, padded: Padded) -> Callable[[int], None]:
    """How a compiled network's calls of one-shot step i are padded (``before_step`` of ``sample``).

    A step that fits one call (the most items it can have, every layer reaching every tile, within the batch size)
    is padded to that most: its shape depends on the canvas, the brush count and the step alone, so what a warm-up
    compiled serves every painting of them, and an attention-layout step past bootstrapping keeps its one item per
    tile. A step of more items than one call (large canvases) runs full calls of the batch size and a last call padded
    to its bucket, instead of a last call padded to a full one (Irworobongdo, SD1.5: 100 evaluations instead of 160).
    """
    factor = 2 if opts.guidance_mode == "full" else 1
    chunk = max(1, opts.batch_size // factor) * factor      # the items of one call (Batched, CFG doubling)
    most = [most_call_items(plan, opts, torch.tensor([i])) for i in range(plan.schedule.steps)]

    def before_step(i: int) -> None:
        padded.minimum = most[i] if most[i] <= chunk else 0
    return before_step


def sample(denoiser: Denoiser, plan: Plan, opts: StepOptions, noise: NoiseSource, *, edit: bool,
           callback: Callable[[StepInfo], None] | None = None,
           decode: Callable[[torch.Tensor], object] | None = None,
           before_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Run every step of the schedule on one canvas; returns the final clean latent [1, C, h, w].
    ``before_step(i)`` runs before step i (``step_shapes``)."""
    shape = (1,) + tuple(plan.z_bg.shape[1:])
    bg_noise = noise.draw(shape)
    x = initial_latent(plan, bg_noise, edit)
    total = plan.schedule.steps
    for i in range(total):
        if before_step is not None:
            before_step(i)
        fresh = noise.draw(shape)
        res = region_step(denoiser, plan, opts, x, torch.tensor([i]), bg_noise=bg_noise, noise=fresh,
                          draw=noise.draw)
        x = res.x_next
        if callback is not None:
            callback(StepInfo(i, total, res.x0, res.x_next, decode))
    return x
