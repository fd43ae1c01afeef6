"""Stable Diffusion XL: two CLIP text encoders, an epsilon-prediction UNet with size and crop micro-conditioning."""
from __future__ import annotations

import torch

from .base import Cond
from .common import DiffusersBackbone, clip_tokens


class SDXLBackbone(DiffusersBackbone):
    family = "sdxl"
    prediction_type = "epsilon"
    size_multiple = 8

    def _encode_unique(self, prompts: list[str]) -> Cond:
        # As StableDiffusionXLPipeline.encode_prompt: penultimate hidden states of both encoders side by side;
        # the pooled embedding is the projected output of the second encoder (CLIP-G).
        embeds = []
        pooled = None
        for tokenizer, encoder in ((self.pipe.tokenizer, self.pipe.text_encoder),
                                   (self.pipe.tokenizer_2, self.pipe.text_encoder_2)):
            out = encoder(clip_tokens(tokenizer, prompts, encoder.device), output_hidden_states=True)
            embeds.append(out.hidden_states[-2].to(self.device))
            pooled = out.text_embeds if hasattr(out, "text_embeds") else pooled
        return {"embeds": torch.cat(embeds, dim=-1), "pooled": pooled.to(self.device)}

    def time_ids(self, x: torch.Tensor, crops: torch.Tensor | None) -> torch.Tensor:
        """Per item (original h, w, crop top, crop left, target h, w), the sizes being the view's pixel size."""
        n, h, w = x.shape[0], x.shape[-2] * self.vae_factor, x.shape[-1] * self.vae_factor
        size = torch.tensor([h, w], dtype=torch.float32, device=self.device).expand(n, 2)
        crops = torch.zeros(n, 2, device=self.device) if crops is None else crops.to(self.device, torch.float32)
        return torch.cat([size, crops.reshape(n, 2), size], dim=1)

    @torch.no_grad()
    def model_output(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Cond,
                     crops: torch.Tensor | None = None) -> torch.Tensor:
        c = self._cond_to_model(cond)
        added = {"text_embeds": c["pooled"], "time_ids": self.time_ids(x, crops).to(self.dtype)}
        out = self.denoiser(x.to(self.device, self.dtype), timesteps.to(self.device, torch.float32),
                            encoder_hidden_states=c["embeds"], added_cond_kwargs=added, return_dict=False)[0]
        return out.float()
