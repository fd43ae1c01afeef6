"""Stable Diffusion XL: two CLIP text encoders, an epsilon-prediction UNet with size and crop micro-conditioning."""
from __future__ import annotations

import torch

from .base import Cond
from .common import DiffusersBackbone, clip_penultimate, clip_tokens


class SDXLBackbone(DiffusersBackbone):
    family = "sdxl"
    prediction_type = "epsilon"
    size_multiple = 8

    def _tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        pipe = self.pipe
        return {"clip_l": clip_tokens(pipe.tokenizer, prompts), "clip_g": clip_tokens(pipe.tokenizer_2, prompts)}

    def _encode_tokens(self, tokens: dict[str, torch.Tensor], count: int) -> Cond:
        # As StableDiffusionXLPipeline.encode_prompt: penultimate hidden states of both encoders side by side;
        # the pooled embedding is the projected output of the second encoder (CLIP-G).
        pipe = self.pipe
        first, _ = clip_penultimate(pipe.text_encoder, tokens["clip_l"])
        second, out = clip_penultimate(pipe.text_encoder_2, tokens["clip_g"])
        embeds = torch.cat([first.to(self.device), second.to(self.device)], dim=-1)
        return {"embeds": embeds, "pooled": out.text_embeds.to(self.device)}

    def time_ids(self, x: torch.Tensor, crops: torch.Tensor | None) -> torch.Tensor:
        """Per item (original h, w, crop top, crop left, target h, w), the sizes being the view's pixel size."""
        n, h, w = x.shape[0], x.shape[-2] * self.vae_factor, x.shape[-1] * self.vae_factor
        size = torch.cat([torch.full((n, 1), h, dtype=torch.float32, device=self.device),   # device fills: no
                          torch.full((n, 1), w, dtype=torch.float32, device=self.device)], 1)  # host copy
        crops = torch.zeros(n, 2, device=self.device) if crops is None else crops.to(self.device, torch.float32)
        return torch.cat([size, crops.reshape(n, 2), size], dim=1)

    @torch.no_grad()
    def model_output(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Cond,
                     crops: torch.Tensor | None = None, regions=None) -> torch.Tensor:
        tokens, pooled, kwargs = self._conditioning(cond, regions)
        added = {"text_embeds": pooled, "time_ids": self.time_ids(x, crops).to(self.dtype)}
        out = self.net(x.to(self.device, self.dtype), timesteps.to(self.device, torch.float32),
                       encoder_hidden_states=tokens, added_cond_kwargs=added, return_dict=False,
                       cross_attention_kwargs=kwargs)[0]
        return out.float()
