"""A backbone whose answer is known: the ideal denoiser for data that is one constant latent per prompt.

For a prompt with target latent c (a constant vector over the canvas), the exact model output is
eps = (x - alpha c) / sigma (or v = eps - c for flow matching), so the sampler's x0_hat is exactly c. Tests use it
to check what aggregation, masks, bootstrapping and tiling do to noise levels and to which prompt wins where.
"""
from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F

from semantic_draw.backbones.base import Backbone

SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
FLOW_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)


def target(prompt: str, channels: int) -> torch.Tensor:
    """The constant latent a prompt stands for: [channels], values in [-1, 1], fixed by the prompt's text."""
    seed = zlib.crc32(prompt.encode())
    return torch.rand(channels, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class AnalyticBackbone(Backbone):
    def __init__(self, family: str = "sd15", channels: int = 4, native_size: int = 64, tile_size: int = 64,
                 cover_alpha: float = 0.3):
        self.family = family
        self.prediction_type = "flow" if family == "sd3" else "epsilon"
        self.latent_channels = channels
        self.size_multiple = 16 if family == "sd3" else 8
        self.native_size, self.tile_size, self.cover_alpha = native_size, tile_size, cover_alpha
        self.tiny_vae = None
        self.scheduler_config = dict(FLOW_SCHEDULER if family == "sd3" else SD_SCHEDULER)
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        self._abar = torch.cumprod(1 - betas, 0)
        self.calls = []   # batch size of each model call

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return torch.float32

    def encode_prompts(self, prompts):
        return {"embeds": torch.stack([target(p, self.latent_channels) for p in prompts])[:, None, :]}

    def _alpha_sigma(self, t: torch.Tensor):
        t = t.double()
        if self.prediction_type == "flow":
            s = t / 1000
            return 1 - s, s
        lo = t.floor().long().clamp(0, 999)
        hi = (lo + 1).clamp(max=999)
        a = self._abar[lo] * (1 - (t - lo)) + self._abar[hi] * (t - lo)
        return a.sqrt(), (1 - a).sqrt()

    def model_output(self, x, timesteps, cond, crops=None):
        self.calls.append(x.shape[0])
        c = cond["embeds"][:, 0, :, None, None].float()
        alpha, sigma = (v.float().view(-1, 1, 1, 1) for v in self._alpha_sigma(timesteps))
        eps = (x - alpha * c) / sigma
        return eps - c if self.prediction_type == "flow" else eps

    def encode_image(self, images):
        pooled = F.avg_pool2d(images.float(), 8)
        return pooled.mean(1, keepdim=True).repeat(1, self.latent_channels, 1, 1)

    def decode(self, latents, tiny=False):
        return F.interpolate(latents[:, :3].float(), scale_factor=8, mode="nearest").clamp(-1, 1)
