"""Stable Diffusion 3: CLIP-L, CLIP-G and (optionally) T5 text encoders, a flow-matching MMDiT transformer."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import RegionJointAttnProcessor, joint_context
from .base import Cond
from .common import DiffusersBackbone, clip_penultimate, clip_tokens


class SD3Backbone(DiffusersBackbone):
    family = "sd3"
    prediction_type = "flow"
    latent_channels = 16
    size_multiple = 16          # 8 px per latent pixel, 2x2 latent patches
    t5_max_length = 256         # StableDiffusion3Pipeline's default max_sequence_length

    def _tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        pipe = self.pipe
        tokens = {"clip_l": clip_tokens(pipe.tokenizer, prompts), "clip_g": clip_tokens(pipe.tokenizer_2, prompts)}
        if pipe.text_encoder_3 is not None:
            tokens["t5"] = pipe.tokenizer_3(prompts, padding="max_length", max_length=self.t5_max_length,
                                            truncation=True, add_special_tokens=True, return_tensors="pt").input_ids
        return tokens

    def _encode_tokens(self, tokens: dict[str, torch.Tensor], count: int) -> Cond:
        # As StableDiffusion3Pipeline.encode_prompt: penultimate hidden states of CLIP-L and CLIP-G side by side,
        # zero-padded to the T5 width, followed by the T5 tokens (zeros when T5 was not loaded); pooled = both
        # CLIP projections side by side.
        pipe = self.pipe
        clip_l, out_l = clip_penultimate(pipe.text_encoder, tokens["clip_l"])
        clip_g, out_g = clip_penultimate(pipe.text_encoder_2, tokens["clip_g"])
        clip = torch.cat([clip_l.to(self.device), clip_g.to(self.device)], dim=-1)
        pooled = torch.cat([out_l.text_embeds.to(self.device), out_g.text_embeds.to(self.device)], dim=-1)
        t5 = self._t5(tokens.get("t5"), count, clip.dtype)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return {"embeds": torch.cat([clip, t5], dim=-2), "pooled": pooled}

    def _t5(self, ids: torch.Tensor | None, count: int, dtype: torch.dtype) -> torch.Tensor:
        if ids is None:
            width = self.denoiser.config.joint_attention_dim
            return torch.zeros(count, self.t5_max_length, width, device=self.device, dtype=dtype)
        encoder = self.pipe.text_encoder_3
        return encoder(ids.to(encoder.device))[0].to(self.device, dtype)

    region_processor = RegionJointAttnProcessor
    region_solo_apart = True   # a bootstrapped brush reads one prompt: its own call spares it every prompt's tokens

    def region_context(self, regions, view_hw):
        # Without T5 a prompt's last t5_max_length tokens are the same zero row: the context keeps one of them.
        repeated = self.t5_max_length if self.pipe.text_encoder_3 is None else 0
        return joint_context(regions, tuple(view_hw), self.denoiser.config.patch_size, self.dtype, self.device,
                             repeated)

    @torch.no_grad()
    def model_output(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Cond,
                     crops: torch.Tensor | None = None, regions=None) -> torch.Tensor:
        # The timestep is the schedule's value, sigma * 1000, exactly what the SD3 pipeline passes.
        tokens, pooled, kwargs = self._conditioning(cond, regions)
        out = self.net(hidden_states=x.to(self.device, self.dtype), timestep=timesteps.to(self.device, torch.float32),
                       encoder_hidden_states=tokens, pooled_projections=pooled, joint_attention_kwargs=kwargs,
                       return_dict=False)[0]
        return out.float()
