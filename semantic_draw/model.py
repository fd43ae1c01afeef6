"""SemanticDraw: owns one backbone (the weights, loaded once) and serves one-shot generations and stream sessions.

The model is read-only after loading; every call brings its own generator, plan and caches, so any number of
callers and sessions can share it. Model calls are serialized by one lock.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .backbones.base import Backbone, Cond
from .errors import SemanticDrawError
from .oneshot import SamplerSettings, StepInfo, method_settings, sample
from .plan import PromptCache, build_plan, layer_specs, soft_masks
from .sampler import StepOptions
from .schedule import LCM_REFERENCE_TIMESTEPS, build_schedule

# Few-step defaults per family when a model comes without a preset.
FAMILY_DEFAULTS = {
    "sd15": SamplerSettings("lcm", timesteps=LCM_REFERENCE_TIMESTEPS),
    "sdxl": SamplerSettings("euler", steps=4, spacing="trailing"),
    "sd3": SamplerSettings("flash", steps=4),
}
REFERENCE_GUIDANCE = {"sd15": 7.5, "sdxl": 7.5, "sd3": 7.0}


def to_pil(images: torch.Tensor) -> Image.Image:
    """[1, 3, H, W] in [-1, 1] -> PIL RGB."""
    arr = ((images[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


class SemanticDraw:
    """Region-based text-to-image generation with semantic brushes on SD1.5, SDXL or SD3."""

    def __init__(self, backbone: Backbone, settings: SamplerSettings | None = None, guidance: float = 0.0,
                 name: str = "", max_pixels: int | None = None):
        self.backbone = backbone
        self.name = name or backbone.family
        self.settings = settings or FAMILY_DEFAULTS[backbone.family]
        self.guidance = guidance
        self.max_pixels = max_pixels
        self._lock = threading.RLock()
        self.calls = 0      # model calls so far (batched)
        self.items = 0      # (slot, tile, layer) items evaluated so far

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str = "sd15", device=None, dtype=None, **kwargs) -> "SemanticDraw":
        from .loading import load_backbone
        from .presets import get_preset
        preset = get_preset(name)
        backbone = load_backbone(preset, device=device, dtype=dtype)
        settings = SamplerSettings(preset.sampler, steps=preset.steps, timesteps=preset.timesteps,
                                   spacing=preset.spacing, eta=preset.eta)
        return cls(backbone, settings, guidance=preset.guidance, name=preset.name, **kwargs)

    @classmethod
    def from_pretrained(cls, source: str, family: str | None = None, loras=(), device=None, dtype=None,
                        settings: SamplerSettings | None = None, guidance: float = 0.0, **load_kwargs):
        """Any SD1.5 / SDXL / SD3 checkpoint: hub id, local diffusers folder or single .safetensors file."""
        from .loading import load_pipeline
        pipe = load_pipeline(source, family=family, loras=loras, device=device, dtype=dtype, **load_kwargs)
        return cls.from_pipeline(pipe, settings=settings, guidance=guidance, name=str(source))

    @classmethod
    def from_pipeline(cls, pipe, settings: SamplerSettings | None = None, guidance: float = 0.0,
                      name: str = "", **backbone_kwargs) -> "SemanticDraw":
        """Wrap an already loaded diffusers SD1.5 / SDXL / SD3 pipeline."""
        from .loading import backbone_from_pipeline
        return cls(backbone_from_pipeline(pipe, **backbone_kwargs), settings, guidance=guidance, name=name)

    # -- facts ---------------------------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.backbone.family

    @property
    def size_multiple(self) -> int:
        return self.backbone.size_multiple

    @property
    def native_size(self) -> int:
        return self.backbone.native_size

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    # -- shared services for the modes ---------------------------------------------------------------------------
    def model_fn(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Cond, crops: torch.Tensor) -> torch.Tensor:
        """The backbone's raw output, one batched call at a time across all threads and sessions."""
        with self._lock, torch.inference_mode():
            self.calls += 1
            self.items += x.shape[0]
            return self.backbone.model_output(x, timesteps, cond, crops)

    def encode_prompts(self, prompts) -> Cond:
        with self._lock, torch.inference_mode():
            return self.backbone.encode_prompts(list(prompts))

    def decode(self, latent: torch.Tensor, tiny: bool = False) -> Image.Image:
        with self._lock, torch.inference_mode():
            return to_pil(self.backbone.decode(latent, tiny=tiny))

    def prompt_cache(self, max_size: int = 256) -> PromptCache:
        return PromptCache(self.encode_prompts, max_size)

    def check_scene(self, scene):
        """Validate a scene for this model: one SemanticDrawError naming the problem, or the normalized scene."""
        from .scene import Scene
        if not isinstance(scene, Scene):
            raise SemanticDrawError("Expected a semantic_draw.Scene (use Scene.load(path) for a palette file).")
        scene = scene.validate()
        if self.max_pixels and scene.height * scene.width > self.max_pixels:
            raise SemanticDrawError(f"The canvas {scene.width}x{scene.height} is too big for this server "
                                    f"(at most {self.max_pixels} pixels).")
        return scene

    def step_options(self, **overrides) -> StepOptions:
        known = set(StepOptions.__dataclass_fields__)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SemanticDrawError(f"Unknown option(s) {', '.join(unknown)}; the sampler takes "
                                    f"{', '.join(sorted(known))}.")
        opts = StepOptions(guidance=self.guidance, guidance_mode="full" if self.guidance > 1 else "none")
        if "guidance" in overrides and "guidance_mode" not in overrides:
            opts.guidance_mode = "full" if overrides["guidance"] > 1 else "none"
        return replace(opts, **overrides).check()

    def schedule(self, settings: SamplerSettings):
        return build_schedule(settings.sampler, self.backbone.scheduler_config, self.backbone.prediction_type,
                              steps=settings.steps, timesteps=settings.timesteps, eta=settings.eta,
                              spacing=settings.spacing)

    # -- stream --------------------------------------------------------------------------------------------------
    def stream(self, scene, seed: int = 0, **options):
        """A StreamSession of this model: ``session.next_frame()`` gives frames, ``session.update(scene)`` edits.

        Options: quantize, cover_alpha, tile_size, tiny_decode, and StepOptions fields (guidance, guidance_mode
        "none" / "full" / "self", bootstrap_steps, ...). Each session owns its state; the weights are shared.
        """
        from .stream import StreamSession
        return StreamSession(self, scene, seed, **options)

    # -- one-shot ------------------------------------------------------------------------------------------------
    def generate(self, scene, seed: int = 0, method: str = "semanticdraw", *, steps: int | None = None,
                 sampler: str | None = None, quantize: str | None = None, cover_alpha: float | None = None,
                 tile_size: int | None = None, blend_background: bool = True,
                 callback: Callable[[StepInfo], None] | None = None, output: str = "pil", **step_overrides):
        """Generate the scene's image (PIL, at the scene's size) with ``method``.

        method: "semanticdraw" (default), "multidiffusion-fast" (naive few-step baseline) or "multidiffusion"
        (50-step reference). steps/sampler/quantize override the model's defaults; other keyword arguments are
        StepOptions fields (guidance, guidance_mode, bootstrap_steps, bootstrap_mix_steps, centering,
        leak_sensitivity, batch_size). callback(info) runs after every step. output="latent" returns the latent.
        """
        scene = self.check_scene(scene)
        base = self.settings
        if sampler is not None:
            base = replace(base, sampler=sampler, timesteps=None, steps=steps or base.steps or 4)
        elif steps is not None:
            base = replace(base, steps=steps, timesteps=None)
        if quantize is not None:
            base = replace(base, quantize=quantize)
        settings, opts = method_settings(method, base, self.step_options(**step_overrides), self.family,
                                         REFERENCE_GUIDANCE[self.family])
        schedule = self.schedule(settings)
        cover = self.backbone.cover_alpha if cover_alpha is None else float(cover_alpha)
        plan = build_plan(self.backbone, scene, schedule, self.prompt_cache(), cover_alpha=cover,
                                quantize=settings.quantize, with_uncond=opts.guidance_mode == "full",
                                tile_size=tile_size or self.backbone.tile_size)
        generator = torch.Generator().manual_seed(int(seed))
        edit = scene.background.image is not None
        latent = sample(self.model_fn, plan, opts, generator, edit=edit, callback=callback,
                        decode=lambda z: self.decode(z, tiny=True))
        if output == "latent":
            return latent
        image = self.decode(latent)
        if edit and blend_background:
            soft = soft_masks(layer_specs(scene), cover, self.device) if scene.layers else None
            image = blend_outside(image, scene.background.image, soft)
        return image


def blend_outside(image: Image.Image, background: Image.Image, soft: torch.Tensor | None) -> Image.Image:
    """Paste the original background outside the (blurred) layer masks."""
    if soft is None:
        return background.convert("RGB").copy()
    keep = soft.max(0).values.clamp(0, 1).cpu().numpy()[..., None]
    out = np.asarray(image, dtype=np.float32) * keep + np.asarray(background.convert("RGB"), dtype=np.float32) * (1 - keep)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
