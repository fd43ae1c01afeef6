"""What the three adapters share: placement, prompt de-duplication, CLIP encoding, VAE encode/decode.

Latent convention (the one diffusers pipelines use): a normalized latent is ``(z - shift_factor) * scaling_factor``
where ``z`` is the raw VAE latent; decoding undoes it. SD3's VAE has a shift factor, SD1.5's and SDXL's do not.
A tiny VAE (AutoencoderTiny) is treated exactly as the pipelines treat one set as ``pipe.vae``: its own config's
scaling_factor (1.0 for the TAESD family) and shift_factor (0.0) are applied with the same formula.
"""
from __future__ import annotations

import contextlib
from abc import abstractmethod
from typing import Any, Sequence

import torch

from ..errors import SemanticDrawError
from .attention import RegionCrossAttnProcessor, unet_context
from .base import Backbone, Cond


def _factors(vae: Any) -> tuple[float, float]:
    cfg = vae.config
    scale = getattr(cfg, "scaling_factor", None)
    shift = getattr(cfg, "shift_factor", None)
    return (1.0 if scale is None else float(scale)), (0.0 if shift is None else float(shift))


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def module_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


# Canvases above this many pixels go through the VAE in overlapping tiles (diffusers' tiled encode / decode), so
# that memory stays bounded whatever the size: a full-canvas decode's activations grow with the pixels (about 2.7 GiB
# per megapixel for the SD VAEs in fp16); below it, and when a full pass runs out of memory, the other way is used.
TILE_ABOVE_PIXELS = 2048 * 1024


@contextlib.contextmanager
def _tiling(vae: Any, on: bool):
    """diffusers' VAEs tile when ``use_tiling`` is set; set it for one call (callers hold the model lock)."""
    before = getattr(vae, "use_tiling", False)
    vae.use_tiling = on
    try:
        yield
    finally:
        vae.use_tiling = before


def _tiled_or_whole(pixels: int, run):
    """run(tiled) whole below TILE_ABOVE_PIXELS, tiled above it, and tiled again if the whole pass runs out of
    memory."""
    tiled = pixels > TILE_ABOVE_PIXELS
    try:
        return run(tiled)
    except torch.OutOfMemoryError:
        if tiled:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return run(True)


@torch.no_grad()
def vae_encode(vae: Any, images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> normalized latents, float32 (the posterior mean: deterministic)."""
    x = images.to(module_device(vae), module_dtype(vae))

    def run(tiled):
        with _tiling(vae, tiled):
            return vae.encode(x)

    out = _tiled_or_whole(x.shape[-2] * x.shape[-1], run)
    z = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
    scale, shift = _factors(vae)
    return ((z.float() - shift) * scale)


@torch.no_grad()
def vae_decode(vae: Any, latents: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Normalized latents -> [N, 3, H, W] float32 in [-1, 1]."""
    scale, shift = _factors(vae)
    z = (latents.float() / scale + shift).to(module_device(vae), module_dtype(vae))

    def run(tiled):
        with _tiling(vae, tiled):
            return vae.decode(z).sample

    image = _tiled_or_whole(z.shape[-2] * z.shape[-1] * factor * factor, run)
    return image.float().clamp(-1.0, 1.0)


def clip_tokens(tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids (CPU) padded (and truncated) to the tokenizer's context length, as the pipelines tokenize."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def clip_penultimate(encoder: Any, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The penultimate hidden states (what SDXL and SD3 condition on) and the encoder's whole output."""
    out = encoder(ids.to(encoder.device), output_hidden_states=True)
    return out.hidden_states[-2], out


class DiffusersBackbone(Backbone):
    """A Backbone around a diffusers pipeline whose denoiser is ``pipe.unet`` or ``pipe.transformer``."""

    def __init__(self, pipe: Any, **kwargs):
        super().__init__(pipe, **kwargs)
        denoiser = getattr(pipe, "transformer", None)
        self.denoiser = denoiser if denoiser is not None else pipe.unet
        self.net = self.denoiser     # what model_output calls: the denoiser module, or its compiled form (compiled.py)
        self.latent_channels = int(self.denoiser.config.in_channels)
        predicts = self.scheduler_config.get("prediction_type") or "epsilon"
        if self.prediction_type == "epsilon" and predicts != "epsilon":
            raise SemanticDrawError(f"This {self.family} model predicts {predicts!r}; only epsilon-prediction models "
                                    "are supported (SD 2.x v-prediction models are not).")

    @property
    def device(self) -> torch.device:
        return module_device(self.denoiser)

    @property
    def dtype(self) -> torch.dtype:
        return module_dtype(self.denoiser)

    # -- text ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def tokenize(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids (CPU) of the distinct prompts, one tensor per tokenizer: no model work, so callers run it
        outside the model's lock and hand the ids to encode_prompts."""
        return self._tokenize(self._distinct(prompts))

    def encode_prompts(self, prompts: Sequence[str], tokens: dict[str, torch.Tensor] | None = None) -> Cond:
        """Each distinct prompt is encoded once, all in one batch; rows come back in the order given, float32."""
        unique = self._distinct(prompts)
        cond = self._encode_tokens(tokens if tokens is not None else self._tokenize(unique), len(unique))
        index = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        return {k: v.float().index_select(0, index.to(v.device)) for k, v in cond.items()}

    @staticmethod
    def _distinct(prompts: Sequence[str]) -> list[str]:
        if isinstance(prompts, str) or len(prompts) == 0:
            raise SemanticDrawError("encode_prompts needs a non-empty list of prompt strings.")
        return list(dict.fromkeys(prompts))

    @abstractmethod
    def _tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids of distinct prompts, per tokenizer."""

    @abstractmethod
    def _encode_tokens(self, tokens: dict[str, torch.Tensor], count: int) -> Cond:
        """Embeddings of ``count`` distinct prompts from their token ids, one batched pass per text encoder."""

    def _cond_to_model(self, cond: Cond) -> Cond:
        return {k: v.to(self.device, self.dtype) for k, v in cond.items()}

    def _conditioning(self, cond: Cond, regions) -> tuple[torch.Tensor, torch.Tensor | None, dict | None]:
        """(text tokens, pooled embedding or None, the attention processors' keywords) of a call: the prompt rows,
        or in the attention layout the regions' context."""
        if regions is not None:
            return regions.tokens, regions.pooled, {"regions": regions}
        c = self._cond_to_model(cond)
        return c["embeds"], c.get("pooled"), None

    # -- the attention region layout -------------------------------------------------------------------------------
    region_processor = RegionCrossAttnProcessor

    def install_region_attention(self) -> None:
        """Put the region-aware attention processors on the network (once): without ``regions`` they compute exactly
        what diffusers' default processors compute."""
        if not getattr(self, "_regions_installed", False):
            self.denoiser.set_attn_processor(self.region_processor())
            self._regions_installed = True

    def region_context(self, regions, view_hw):
        """What the processors read for one batch of views in the attention layout (attention.py)."""
        return unet_context(regions, tuple(view_hw), self.dtype, self.device)

    # -- pixels <-> latents --------------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return vae_encode(self.pipe.vae, images)

    def decode(self, latents: torch.Tensor, tiny: bool = False) -> torch.Tensor:
        vae = self.tiny_vae if (tiny and self.tiny_vae is not None) else self.pipe.vae
        return vae_decode(vae, latents)
