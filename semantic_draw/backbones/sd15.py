"""Stable Diffusion 1.5: one CLIP text encoder, an epsilon-prediction UNet."""
from __future__ import annotations

import torch

from .base import Cond
from .common import DiffusersBackbone, clip_tokens


class SD15Backbone(DiffusersBackbone):
    family = "sd15"
    prediction_type = "epsilon"
    size_multiple = 8

    def _tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        return {"clip": clip_tokens(self.pipe.tokenizer, prompts)}

    def _encode_tokens(self, tokens: dict[str, torch.Tensor], count: int) -> Cond:
        # As StableDiffusionPipeline.encode_prompt without clip_skip: the final (layer-normed) hidden states.
        encoder = self.pipe.text_encoder
        return {"embeds": encoder(tokens["clip"].to(encoder.device)).last_hidden_state}

    @torch.no_grad()
    def model_output(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Cond,
                     crops: torch.Tensor | None = None, regions=None) -> torch.Tensor:
        tokens, _, kwargs = self._conditioning(cond, regions)
        out = self.net(x.to(self.device, self.dtype), timesteps.to(self.device, torch.float32),
                       encoder_hidden_states=tokens, return_dict=False, cross_attention_kwargs=kwargs)[0]
        return out.float()
