"""Mask preparation (ALGORITHM.md section 3): order/cover, blur, strength, per-step quantization, latent size.

All functions work on float tensors [P, H, W] (one mask per layer, bottom layer first) and never loop over pixels.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .errors import SemanticDrawError
from .options import check_choice

QUANTIZE_MODES = ("discrete", "continuous", "semi-continuous", "none")


def covered_by_later(painted: torch.Tensor) -> torch.Tensor:
    """[P, H, W] bool -> [P, H, W] bool: where any later (higher) layer than p is painted."""
    count = painted.int()
    above = torch.flip(torch.cumsum(torch.flip(count, [0]), 0), [0]) - count
    return above > 0


def cover(raw: torch.Tensor, cover_alpha: float) -> torch.Tensor:
    """Multiply mask p by ``cover_alpha`` wherever any later (higher) layer is painted."""
    return torch.where(covered_by_later(raw > 0), raw * cover_alpha, raw)


def _gaussian_kernel(std: float, radius: int, device, dtype) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    if std <= 0:
        return (x == 0).to(dtype)        # the identity, padded to the shared radius
    k = torch.exp(-0.5 * (x / std) ** 2)
    return k / k.sum()


def blur_many(masks: torch.Tensor, stds: Sequence[float], stride: int = 1, offset: int = 0) -> torch.Tensor:
    """Separable Gaussian blur of [P, H, W] masks, each with its own std (pixels; 0 = unchanged).

    One grouped convolution per axis for all layers, edge pixels repeated outward. With ``stride`` > 1 only the
    pixels (offset + i * stride, offset + j * stride) are computed: exactly those of the full-size blur, at a
    fraction of the cost (the latent grid needs one pixel per block).
    """
    stds = [float(s) for s in stds]
    sampled = masks[..., offset::stride, offset::stride]
    if not any(s > 0 for s in stds):
        return sampled
    p = masks.shape[0]
    radius = max(1, int(math.ceil(3.0 * max(stds))))
    k = torch.stack([_gaussian_kernel(s, radius, masks.device, masks.dtype) for s in stds])   # [P, 2r + 1]
    m = F.pad(masks[None], (radius, radius, 0, 0), mode="replicate")[..., offset:]
    m = F.conv2d(m, k.view(p, 1, 1, -1), groups=p, stride=(1, stride))
    m = F.pad(m, (0, 0, radius, radius), mode="replicate")[..., offset:, :]
    m = F.conv2d(m, k.view(p, 1, -1, 1), groups=p, stride=(stride, 1))
    return torch.where(torch.tensor(stds, device=masks.device).view(p, 1, 1) > 0, m[0], sampled)


def blur(mask: torch.Tensor, std: float) -> torch.Tensor:
    """Separable Gaussian blur of one [H, W] mask with ``std`` pixels; std 0 returns the mask unchanged."""
    return blur_many(mask[None], [std])[0]


def prepare_layer(raw: torch.Tensor, covered: torch.Tensor | None, cover_alpha: float, blur_std: float,
                  strength: float, factor: int = 1) -> torch.Tensor:
    """One raw {0,1} mask [H, W] -> soft mask in [0, 1]: cover (where ``covered``), blur, multiply by strength."""
    covered = torch.zeros_like(raw, dtype=torch.bool) if covered is None else covered
    return prepare(raw[None], cover_alpha, [blur_std], [strength], covered=covered[None], factor=factor)[0]


def prepare(raw: torch.Tensor, cover_alpha: float, blur_stds: Sequence[float],
            strengths: Sequence[float], covered: torch.Tensor | None = None, factor: int = 1) -> torch.Tensor:
    """Raw {0,1} masks [P, H, W] -> soft masks in [0, 1]: cover by later layers, blur, multiply by strength.

    ``covered`` ([P, H, W] bool) overrides where each mask counts as covered (default: by the later layers given).
    ``factor`` > 1 returns only the centre pixel of each factor x factor block (the latent grid): the same values
    as ``to_latent(prepare(...), factor)``, computed directly.
    """
    if raw.shape[0] != len(blur_stds) or raw.shape[0] != len(strengths):
        raise SemanticDrawError("Each layer needs one blur value and one strength value.")
    m = raw.float()
    covered = covered_by_later(m > 0) if covered is None else covered
    m = torch.where(covered, m * cover_alpha, m)
    scale = torch.tensor([float(s) for s in strengths], device=m.device, dtype=m.dtype).view(-1, 1, 1)
    return (blur_many(m, blur_stds, factor, factor // 2) * scale).clamp_(0.0, 1.0)


def quantize(m: torch.Tensor, levels: torch.Tensor, mode: str = "discrete") -> torch.Tensor:
    """Soft masks [..., H, W] -> step masks [T, ..., H, W] for noise levels sigma_0 > ... > sigma_T = 0.

    discrete: M_i = [m >= sigma_i] (and m > 0); continuous: clip((m - sigma_{i+1}) / (sigma_i - sigma_{i+1}), 0, 1);
    semi-continuous: discrete except the last step; none: the soft mask itself at every step.
    Masks only grow from step to step: a weak or blurred pixel joins its region at a later, less noisy step.
    """
    check_choice(mode, "mask quantization", QUANTIZE_MODES, error=SemanticDrawError)
    lv = levels.to(m.device, m.dtype)
    steps = len(lv) - 1
    shape = (steps,) + (1,) * m.dim()
    if mode == "none":
        return m.unsqueeze(0).expand(shape[:1] + m.shape).clone()
    hi, lo = lv[:-1].view(shape), lv[1:].view(shape)
    discrete = ((m.unsqueeze(0) >= hi) & (m.unsqueeze(0) > 0)).to(m.dtype)
    if mode == "discrete":
        return discrete
    continuous = ((m.unsqueeze(0) - lo) / (hi - lo).clamp_min(1e-8)).clamp(0.0, 1.0)
    if mode == "continuous":
        return continuous
    discrete[-1] = continuous[-1]
    return discrete


def to_latent(m: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel masks [..., H, W] -> latent masks [..., H/f, W/f], sampling the centre pixel of each f x f block.

    Nearest sampling commutes with the pointwise quantization, so masks may be sampled before quantizing.
    """
    c = factor // 2
    return m[..., c::factor, c::factor].contiguous()
