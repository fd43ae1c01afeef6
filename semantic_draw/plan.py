"""Turn a validated Scene into what the region step needs (a Plan): layer list, step masks, embeddings, background.

Used by the one-shot mode and by the stream, which rebuilds only the parts an edit touches.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from . import masks as M
from .backbones.base import Backbone, Cond
from .errors import SemanticDrawError
from .sampler import Plan
from .schedule import Schedule
from .tiles import make_tiling


@dataclass(frozen=True)
class LayerSpec:
    """One layer as the sampler sees it; the background prompt becomes a full-canvas bottom layer."""
    prompt: str
    negative_prompt: str
    mask: np.ndarray            # bool [H, W]
    blur: float = 0.0
    strength: float = 1.0
    prompt_strength: float = 1.0


def layer_specs(scene) -> list[LayerSpec]:
    """Layers bottom to top. Without a background image the background prompt paints the whole canvas under them."""
    bg = scene.background
    specs = []
    if bg.image is None:
        specs.append(LayerSpec(bg.prompt or "", bg.negative_prompt or "",
                               np.ones((scene.height, scene.width), dtype=bool)))
    for layer in scene.layers:
        specs.append(LayerSpec(layer.prompt, layer.negative_prompt or "", layer.mask, float(layer.mask_blur),
                               float(layer.mask_strength), float(layer.prompt_strength)))
    return specs


class PromptCache:
    """Embeddings by prompt text (LRU); missing prompts are encoded together in one batch."""

    def __init__(self, encode: Callable[[Sequence[str]], Cond], max_size: int = 256):
        self._encode = encode
        self._rows: OrderedDict[str, Cond] = OrderedDict()
        self.max_size = max_size
        self.encoded = 0  # prompts encoded so far (for tests and benchmarks)

    def get(self, prompts: Sequence[str]) -> Cond:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._rows))
        if missing:
            cond = self._encode(missing)
            self.encoded += len(missing)
            for i, p in enumerate(missing):
                self._rows[p] = {k: v[i:i + 1] for k, v in cond.items()}
        for p in prompts:
            self._rows.move_to_end(p)
        rows = [self._rows[p] for p in prompts]
        while len(self._rows) > max(self.max_size, len(set(prompts))):
            self._rows.popitem(last=False)
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}


def strengthen(cond: Cond, anchor: Cond, strengths: Sequence[float]) -> Cond:
    """Prompt strength: e_p <- e_anchor + k_p (e_p - e_anchor), for every tensor of the conditioning."""
    out = {}
    for key, value in cond.items():
        k = torch.tensor(list(strengths), device=value.device, dtype=value.dtype).view(-1, *[1] * (value.dim() - 1))
        out[key] = anchor[key] + k * (value - anchor[key])
    return out


def conditioning(specs: Sequence[LayerSpec], background, cache: PromptCache,
                 with_uncond: bool) -> tuple[Cond, Cond | None]:
    """Per-layer embeddings with prompt strength applied (and negative ones when CFG is on)."""
    strengths = [s.prompt_strength for s in specs]
    anchor = cache.get([background.prompt or ""])
    cond = strengthen(cache.get([s.prompt for s in specs]), anchor, strengths)
    if not with_uncond:
        return cond, None
    neg_anchor = cache.get([background.negative_prompt or ""])
    uncond = strengthen(cache.get([s.negative_prompt for s in specs]), neg_anchor, strengths)
    return cond, uncond


def soft_masks(specs: Sequence[LayerSpec], cover_alpha: float, device, factor: int = 1) -> torch.Tensor:
    """[P, H, W] masks after cover, blur and strength, in pixels (or on the latent grid with factor 8)."""
    raw = torch.from_numpy(np.stack([s.mask for s in specs])).to(device=device, dtype=torch.float32)
    return M.prepare(raw, cover_alpha, [s.blur for s in specs], [s.strength for s in specs], factor=factor)


def step_masks(soft: torch.Tensor, schedule: Schedule, quantize: str) -> torch.Tensor:
    """[P, h, w] soft masks on the latent grid -> [T, P, h, w] step masks."""
    return M.quantize(soft, schedule.noise_levels, quantize)


def image_to_tensor(image, device) -> torch.Tensor:
    """PIL RGB -> [1, 3, H, W] in [-1, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(device)


def background_latents(backbone: Backbone, image, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean latents of the background image (or white) and of a white canvas, [1, C, h, w] each."""
    side = 8 * backbone.size_multiple  # a small white square: the VAE maps a flat image to a flat latent
    white = torch.ones(1, 3, side, side, device=backbone.device)
    z_white = backbone.encode_image(white).mean((2, 3), keepdim=True).expand(1, -1, h, w).contiguous()
    if image is None:
        return z_white, z_white
    return backbone.encode_image(image_to_tensor(image, backbone.device)), z_white


def check_canvas(backbone: Backbone, height: int, width: int) -> None:
    m = backbone.size_multiple
    if height % m or width % m:
        raise SemanticDrawError(f"This model needs a canvas whose sides are multiples of {m} pixels; "
                                f"{width}x{height} is not. Try {width // m * m}x{height // m * m}.")


def build_plan(backbone: Backbone, scene, schedule: Schedule, cache: PromptCache, *, cover_alpha: float,
               quantize: str, with_uncond: bool, tile_size: int) -> Plan:
    """A Plan for a validated scene."""
    check_canvas(backbone, scene.height, scene.width)
    f = backbone.vae_factor
    h, w = scene.height // f, scene.width // f
    specs = layer_specs(scene)
    if not specs:
        raise SemanticDrawError("Nothing to draw: add a brush or a background prompt.")
    soft = soft_masks(specs, cover_alpha, backbone.device, factor=f)
    cond, uncond = conditioning(specs, scene.background, cache, with_uncond)
    z_bg, z_white = background_latents(backbone, scene.background.image, h, w)
    tiling = make_tiling(h, w, max(1, tile_size // f))
    return Plan(schedule, tiling, step_masks(soft, schedule, quantize), cond, uncond, z_bg, z_white, f)
