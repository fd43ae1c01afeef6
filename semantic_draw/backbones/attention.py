"""Attention processors of the attention region layout (ALGORITHM.md section 11), and what they read.

A batch of views in the attention layout carries S prompt slots and, per item, one weight map per slot (``Regions``
in denoiser.py). The backbone turns them into a context once per network call (``unet_context`` / ``joint_context``)
and passes it to its attention processors as the ``regions`` keyword:

- UNet families (SD1.5, SDXL), cross-attention: each query pixel attends to each prompt's tokens on its own (softmax
  per prompt) and the outputs are mixed by the pixel's normalized weights, resized to the layer's resolution.
  Self-attention is untouched.
- SD3, joint attention: the S prompts' tokens are one text stream; an image token attends to every image token and to
  the text tokens of each prompt with the bias log(weight), so a prompt it does not lie in is masked out and a pixel
  shared by several prompts weighs them; a prompt's text tokens attend to their own tokens and to the image tokens of
  its region.
Without ``regions`` both processors are exactly diffusers' own (AttnProcessor2_0, JointAttnProcessor2_0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0, JointAttnProcessor2_0

from ..transfer import to_device


@dataclass
class UNetRegions:
    """What the cross-attention processors read in one network call."""
    prompts: torch.Tensor                 # [G, S, T, D] prompt sets of S slots, model dtype
    group: torch.Tensor                   # [N] long: the set each item reads
    weights: dict[int, torch.Tensor]      # query length (h * w of a resolution) -> [M, S, 1, h * w, 1] (mixes)
    solo: torch.Tensor                    # items that read one slot alone (bootstrapped brushes)...
    lone_slot: torch.Tensor               # ... and that slot
    mix: torch.Tensor                     # items that mix the slots by their weights
    tokens: torch.Tensor                  # [N, T, D] what the UNet is given as encoder states (unused by the mix)
    pooled: torch.Tensor | None           # [N, D'] area-weighted pooled embedding per item (SDXL), or None

    @property
    def slots(self) -> int:
        return self.prompts.shape[1]

    def batch_dims(self) -> list[tuple[torch.Tensor, int]]:
        """(tensor, dimension) of every size that is the batch's (or the mixed items', all of them in a compiled
        call), for a compiled network with a dynamic batch (compiled.DynamicBatch)."""
        dims = [(self.group, 0), (self.tokens, 0)]
        if len(self.mix) == len(self.group):
            dims += [(self.mix, 0)] + [(w, 0) for w in self.weights.values()]
        return dims + ([] if self.pooled is None else [(self.pooled, 0)])

    def slot_dims(self) -> list[tuple[torch.Tensor, int]]:
        """(tensor, dimension) of every size that is the number of prompt slots: with these dynamic, one compiled
        graph serves every brush count (the processor has no loop over the slots)."""
        return [(self.prompts, 1)] + [(w, 1) for w in self.weights.values()]


@dataclass
class JointRegions:
    """What SD3's joint-attention processors read in one network call."""
    bias: torch.Tensor                    # [N, 1, L, L'] additive bias, image tokens first, then the S prompts'
                                          # tokens; rows padded to L' (``padded``), cut to L where used
    tokens: torch.Tensor                  # [N, S * T, D] each item's text stream: its set's prompts side by side
    pooled: torch.Tensor                  # [N, D'] area-weighted pooled embedding per item

    def batch_dims(self) -> list[tuple[torch.Tensor, int]]:
        """(tensor, dimension) of every size that is the batch's (compiled.DynamicBatch)."""
        return [(self.bias, 0), (self.tokens, 0), (self.pooled, 0)]

    def slot_dims(self) -> list[tuple[torch.Tensor, int]]:
        """The sizes that follow the number of prompts: the text stream's length, and the bias's (image tokens
        first, then the text tokens)."""
        return [(self.tokens, 1), (self.bias, 2), (self.bias, 3)]


# Inputs torch.export can take apart and put together (the ahead-of-time path exports attention-layout calls).
# No field name starts another one: torch's guard code for exported programs mixes such names up.
for _context in (UNetRegions, JointRegions):
    torch.export.register_dataclass(_context, serialized_type_name=f"semantic_draw.{_context.__name__}")


def normalized(weights: torch.Tensor) -> torch.Tensor:
    """[N, S, h, w] -> weights that sum to 1 over the slots at every pixel."""
    return weights / weights.sum(1, keepdim=True).clamp_min(1e-12)


def pooled_mix(weights: torch.Tensor, pooled: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Each item's pooled embedding: its set's rows [G, S, D'] weighted by the area each slot takes in the item."""
    area = weights.mean((2, 3))                                           # [N, S]
    rows = pooled.index_select(0, group)                                  # [N, S, D']
    return (area[..., None] * rows).sum(1) / area.sum(1, keepdim=True)


def pyramid(h: int, w: int) -> list[tuple[int, int]]:
    """The resolutions a UNet sees a view at: each down-sampling halves a side, rounding up."""
    sizes = [(h, w)]
    while sizes[-1] != (1, 1):
        a, b = sizes[-1]
        sizes.append(((a + 1) // 2, (b + 1) // 2))
    return sizes


def unet_context(regions, view_hw, dtype: torch.dtype, device) -> UNetRegions:
    group = to_device(regions.item_groups(), device)
    weights = normalized(regions.weights.to(device, torch.float32))
    n = len(weights)
    alone = regions.alone if regions.alone is not None else torch.full((n,), -1, dtype=torch.long)
    solo, mix = (alone >= 0).nonzero().flatten(), (alone < 0).nonzero().flatten()   # on the host: no device sync
    mix_dev = to_device(mix, device)
    per_size = {}
    for h, w in pyramid(*view_hw):
        at = normalized(F.adaptive_avg_pool2d(weights.index_select(0, mix_dev), (h, w))).flatten(2)  # [M, S, h*w]
        per_size[h * w] = at[:, :, None, :, None].to(dtype)
    embeds = regions.prompts["embeds"].to(device, dtype)                     # [G, S, T, D]
    pooled = regions.prompts.get("pooled")
    return UNetRegions(embeds, group, per_size, to_device(solo, device), to_device(alone[solo], device),
                       mix_dev, embeds[:, 0].index_select(0, group),
                       None if pooled is None else pooled_mix(weights, pooled.to(device, torch.float32),
                                                              group).to(dtype))


def joint_context(regions, view_hw, patch: int, dtype: torch.dtype, device, repeated: int = 0) -> JointRegions:
    """The joint-attention context of one call. ``repeated``: how many of each prompt's last tokens are one token
    repeated (SD3 without T5: 256 zero rows). They are kept once, with the bias log(repeated) on their column: an
    attention over k equal keys (equal values) is one key of weight k, and equal text tokens stay equal through
    every block (no positional embedding, per-token layers, the same bias row), so the result is the same up to
    rounding while each prompt carries 78 tokens instead of 333."""
    group = to_device(regions.item_groups(), device)
    weights = normalized(regions.weights.to(device, torch.float32))
    at = normalized(F.avg_pool2d(weights, patch)).flatten(2)                 # [N, S, P] per image token
    embeds = regions.prompts["embeds"].to(device, dtype).index_select(0, group)   # [N, S, T, D]
    if repeated > 1:
        embeds = embeds[:, :, :embeds.shape[2] - repeated + 1]
    n, s, t, d = embeds.shape
    p = at.shape[-1]
    weight = torch.zeros(t, device=device)                                   # log(multiplicity) per text column
    if repeated > 1:
        weight[-1] = math.log(repeated)
    weight = weight.repeat(s)                                                # [S * T]
    image_to_text = torch.log(at).transpose(1, 2).repeat_interleave(t, 2) + weight     # [N, P, S * T]
    text_to_image = torch.where(at > 0, 0.0, -torch.inf).repeat_interleave(t, 1)   # [N, S * T, P]
    own = torch.block_diag(*[torch.ones(t, t, device=device)] * s) > 0
    text_to_text = (torch.where(own, 0.0, -torch.inf) + weight).expand(n, -1, -1)
    bias = torch.cat([torch.cat([at.new_zeros(n, p, p), image_to_text], 2),
                      torch.cat([text_to_image, text_to_text], 2)], 1)[:, None]
    pooled = pooled_mix(weights, regions.prompts["pooled"].to(device, torch.float32), group)
    return JointRegions(padded(bias.to(dtype)), embeds.reshape(n, s * t, d), pooled.to(dtype))


def padded(bias: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """The bias with its rows padded to a multiple of ``multiple`` elements, always by 1 to ``multiple``. The
    processor cuts it back to its length: a view whose rows are aligned as the memory-efficient SDPA kernel needs (a
    misaligned bias is padded and copied by torch in every call: every joint-attention layer of every step). SD3's
    rows are image tokens + S x 78 text tokens (333 with T5), rarely aligned. The padded tensor itself is
    contiguous and its padding never 0, so that a compiled graph or an exported program with the prompt count
    dynamic takes it for every count (an exported program cannot take a view's stride as an input)."""
    length = bias.shape[-1]
    return F.pad(bias, (0, multiple - length % multiple))


MIX_ELEMENTS = 2 ** 27   # the most query elements one batched attention over the slots copies (256 MiB in fp16)


def mixed_attention(query, key, value, weights) -> torch.Tensor:
    """Each slot's attention on its own, mixed: query [M, heads, L, d], key / value [M, S, heads, T, d], weights
    [M, S, 1, L, 1] -> [M, heads, L, d]. The slots go through one attention call as a batch of M x S (the query
    repeated per slot), not a loop: a few kernels whatever the brush count, and no Python-level count of the slots,
    so a compiled graph with the slot dimension dynamic serves every brush count. Batches past MIX_ELEMENTS go in
    groups of slots."""
    s = key.shape[1]
    if s * query.numel() <= MIX_ELEMENTS:
        return _mixed(query, key, value, weights)
    step = max(1, MIX_ELEMENTS // query.numel())
    mixed = _mixed(query, key[:, :step], value[:, :step], weights[:, :step])
    for start in range(step, s, step):
        mixed = mixed + _mixed(query, key[:, start:start + step], value[:, start:start + step],
                               weights[:, start:start + step])
    return mixed


def _mixed(query, key, value, weights) -> torch.Tensor:
    m, s = key.shape[:2]
    q = query[:, None].expand(m, s, *query.shape[1:]).flatten(0, 1)          # [M * S, heads, L, d]
    out = F.scaled_dot_product_attention(q, key.flatten(0, 1), value.flatten(0, 1))
    return (out.unflatten(0, (m, s)) * weights).sum(1)


class RegionCrossAttnProcessor(AttnProcessor2_0):
    """Diffusers' processor, with each pixel's cross-attention mixed over the prompts of ``regions``."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, regions: UNetRegions | None = None, **kwargs):
        if regions is None or encoder_hidden_states is None or hidden_states.ndim != 3:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        n = hidden_states.shape[0]
        text = regions.prompts
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)
        query, key, value = attn.to_q(hidden_states), attn.to_k(text), attn.to_v(text)
        heads = attn.heads
        d = key.shape[-1] // heads
        query = query.view(n, -1, heads, d).transpose(1, 2)                  # [N, heads, HW, d]
        key = key.unflatten(-1, (heads, d)).transpose(2, 3)                  # [G, S, heads, T, d]
        value = value.unflatten(-1, (heads, d)).transpose(2, 3)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = torch.empty_like(query)
        # (sizes read with .shape, not len(): len() makes a traced size a constant, which torch.export cannot vary)
        if regions.solo.shape[0]:      # an item that reads one slot: that prompt's attention, once
            group = regions.group[regions.solo]
            out[regions.solo] = F.scaled_dot_product_attention(
                query[regions.solo], key[group, regions.lone_slot], value[group, regions.lone_slot])
        if regions.mix.shape[0]:       # a whole view: each slot's attention, mixed by the pixel's weights
            group = regions.group[regions.mix]
            out[regions.mix] = mixed_attention(query[regions.mix], key[group], value[group],
                                               regions.weights[query.shape[2]])
        hidden_states = out.transpose(1, 2).reshape(n, -1, heads * d).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class RegionJointAttnProcessor(JointAttnProcessor2_0):
    """Diffusers' SD3 processor, with the region bias of ``regions`` on the joint attention."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args,
                 regions: JointRegions | None = None, **kwargs):
        if regions is None or encoder_hidden_states is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        n, length = hidden_states.shape[:2]
        heads = attn.heads

        def split(t, norm=None):
            t = t.view(n, -1, heads, t.shape[-1] // heads).transpose(1, 2)
            return t if norm is None else norm(t)

        query = torch.cat([split(attn.to_q(hidden_states), attn.norm_q),
                           split(attn.add_q_proj(encoder_hidden_states), attn.norm_added_q)], 2)
        key = torch.cat([split(attn.to_k(hidden_states), attn.norm_k),
                         split(attn.add_k_proj(encoder_hidden_states), attn.norm_added_k)], 2)
        value = torch.cat([split(attn.to_v(hidden_states)), split(attn.add_v_proj(encoder_hidden_states))], 2)
        bias = regions.bias[..., :key.shape[2]]          # its padded rows cut back: an aligned view
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(n, -1, heads * query.shape[-1]).to(query.dtype)
        hidden_states, encoder_hidden_states = out[:, :length], out[:, length:]
        if not attn.context_pre_only:
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        return hidden_states, encoder_hidden_states
