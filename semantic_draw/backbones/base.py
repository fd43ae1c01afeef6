"""What every backbone adapter (SD1.5, SDXL, SD3) offers the region sampler.

The sampler never looks inside a backbone: it asks for prompt embeddings, for the raw model output on a batch of
views (turned into (x0_hat, eps_hat) by the adapter's parametrization), and for VAE encode/decode. Everything that
differs between the families lives behind this interface and in the family registry (registry.py).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch

Cond = dict[str, torch.Tensor]
"""Prompt conditioning: each tensor batched on dim 0, one row per prompt (e.g. {"embeds": ..., "pooled": ...})."""


class Backbone(ABC):
    family: str = ""              # the family's name in the registry ("sd15", "sdxl", "sd3", ...)
    prediction_type: str = "epsilon"  # "epsilon" (SD1.5, SDXL) or "flow" (SD3: the model predicts v = eps - x0)
    latent_channels: int = 4
    vae_factor: int = 8           # pixels per latent pixel
    size_multiple: int = 8        # canvas height and width must be multiples of this (16 for SD3)

    def __init__(self, pipe: Any, *, native_size: int, tile_size: int, cover_alpha: float,
                 tiny_vae: Any | None = None):
        self.pipe = pipe
        self.native_size = native_size    # pixels: the resolution the model was trained at
        self.tile_size = tile_size        # pixels: view size on large canvases (stride is half of it)
        self.cover_alpha = cover_alpha    # default for masks covered by later layers
        self.tiny_vae = tiny_vae          # AutoencoderTiny or None
        self.scheduler_config = dict(pipe.scheduler.config)

    @property
    def parametrization(self):
        """How the raw output becomes (x0_hat, eps_hat): backbones/parametrization.py."""
        from .parametrization import PARAMETRIZATIONS
        return PARAMETRIZATIONS[self.prediction_type]

    # -- placement ---------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype: ...

    # -- text ----------------------------------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> Any:
        """Token ids of the prompts, made without the model (outside its lock); None: encode_prompts tokenizes."""
        return None

    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str], tokens: Any = None) -> Cond:
        """Embeddings for each prompt, batched in the order given (float32 or model dtype, on self.device);
        ``tokens``: what tokenize(prompts) returned, when it was called first."""

    # -- denoiser ------------------------------------------------------------------------------------------------
    @abstractmethod
    def model_output(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Cond,
                     crops: torch.Tensor | None = None, regions: Any = None) -> torch.Tensor:
        """Raw model output (epsilon, or flow velocity for SD3) for a batch of views.

        x: [N, C, h, w] float32 latents in the project's VP form x_t = alpha x0 + sigma eps (no extra input scaling).
        timesteps: [N] the schedule's conditioning values (diffusers' timesteps) for each item.
        cond: conditioning with N rows (unused in the attention layout).
        crops: [N, 2] (top, left) pixel offset of each view in the canvas (SDXL passes it as crop coordinates).
        regions: the attention layout's context (``region_context``), which then replaces ``cond``.
        Returns float32 [N, C, h, w].
        """

    def install_region_attention(self) -> None:
        """Make the network ready for the attention layout (region-aware attention processors)."""
        raise NotImplementedError(f"The {self.family} adapter has no attention region layout.")

    def region_context(self, regions, view_hw):
        """The attention layout's prompt weights of a batch of views, as the attention processors read them."""
        raise NotImplementedError(f"The {self.family} adapter has no attention region layout.")

    # -- pixels <-> latents --------------------------------------------------------------------------------------
    @abstractmethod
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> normalized latents [N, C, H/8, W/8] float32 (scale and shift applied)."""

    @abstractmethod
    def decode(self, latents: torch.Tensor, tiny: bool = False) -> torch.Tensor:
        """Normalized latents -> [N, 3, H, W] float32 in [-1, 1]. tiny=True uses the tiny VAE when there is one."""
