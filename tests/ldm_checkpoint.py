"""Test helper: write a tiny diffusers SD1.5 / SDXL / SD3 pipeline as an original-format single-file checkpoint.

diffusers' from_single_file only reads original key names (model.diffusion_model.*, first_stage_model.*,
cond_stage_model.transformer.*) and converts them; it has no diffusers-to-original converter, so this is the
inverse of its renaming rules (loaders/single_file_utils.py) for UNets and VAEs built from the standard blocks and
for the SD3 MMDiT.
"""
from __future__ import annotations

import re

import torch
from safetensors.torch import save_file

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTN = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        rest = rest.replace(new, old)
    return rest


def unet_to_ldm(unet) -> dict:
    per = unet.config.layers_per_block + 1          # LDM numbers one slot per layer plus the down/upsampler
    with_attn = {int(k.split(".")[1]) for k in unet.state_dict() if k.startswith("up_blocks") and ".attentions." in k}
    out = {}
    for key, value in unet.state_dict().items():
        module, _, param = key.rpartition(".")
        if module in _UNET_FIXED:
            name = f"{_UNET_FIXED[module]}.{param}"
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            slot = 1 + b * per + j
            name = f"input_blocks.{slot}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{slot}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            name = f"input_blocks.{1 + int(m[1]) * per + per - 1}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            name = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            name = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            slot = b * per + j
            name = f"output_blocks.{slot}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{slot}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            b = int(m[1])
            name = f"output_blocks.{b * per + per - 1}.{2 if b in with_attn else 1}.conv.{m[2]}"
        else:
            raise KeyError(f"no original name for UNet key {key}")
        out["model.diffusion_model." + name] = value
    return out


def vae_to_ldm(vae) -> dict:
    n = len(vae.config.up_block_types)
    out = {}
    for key, value in vae.state_dict().items():
        name = key.replace("conv_norm_out", "norm_out")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", name):
            name = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", name):
            name = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", name):
            name = f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", name):
            name = f"decoder.up.{n - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", name):
            name = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", name):
            name = f"{m[1]}.mid.attn_1.{dict(_VAE_ATTN)[m[2]]}.{m[3]}"
        out["first_stage_model." + name] = value
    return out


_SD3_FIXED = {"pos_embed.proj": "x_embedder.proj", "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
              "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2", "context_embedder": "context_embedder",
              "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
              "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2", "proj_out": "final_layer.linear"}
_SD3_BLOCK = {"attn.to_out.0": "x_block.attn.proj", "attn.to_add_out": "context_block.attn.proj",
              "norm1.linear": "x_block.adaLN_modulation.1", "norm1_context.linear": "context_block.adaLN_modulation.1",
              "ff.net.0.proj": "x_block.mlp.fc1", "ff.net.2": "x_block.mlp.fc2",
              "ff_context.net.0.proj": "context_block.mlp.fc1", "ff_context.net.2": "context_block.mlp.fc2"}

_SD3_QKV = {"attn.to_q": ("x_block", ("attn.to_q", "attn.to_k", "attn.to_v")),   # fused into one qkv projection
            "attn.add_q_proj": ("context_block", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"))}


def _swap_halves(t):   # diffusers' AdaLayerNorm orders (scale, shift); the original checkpoints (shift, scale)
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def sd3_transformer_to_original(transformer) -> dict:
    sd = transformer.state_dict()
    last = transformer.config.num_layers - 1
    out = {"pos_embed": sd["pos_embed.pos_embed"]}
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        if module in _SD3_FIXED:
            out[f"{_SD3_FIXED[module]}.{param}"] = value
        elif module == "norm_out.linear":
            out[f"final_layer.adaLN_modulation.1.{param}"] = _swap_halves(value)
        elif m := re.match(r"transformer_blocks\.(\d+)\.(.*)", module):
            i, sub = int(m[1]), m[2]
            if sub in _SD3_BLOCK:
                swap = sub == "norm1_context.linear" and i == last
                out[f"joint_blocks.{i}.{_SD3_BLOCK[sub]}.{param}"] = _swap_halves(value) if swap else value
            elif sub in _SD3_QKV:
                block, parts = _SD3_QKV[sub]
                qkv = [sd[f"transformer_blocks.{i}.{part}.{param}"] for part in parts]
                out[f"joint_blocks.{i}.{block}.attn.qkv.{param}"] = torch.cat(qkv, dim=0)
            elif not any(sub in parts for _, parts in _SD3_QKV.values()):
                raise KeyError(f"no original name for transformer key {key}")
        elif key != "pos_embed.pos_embed":
            raise KeyError(f"no original name for transformer key {key}")
    return {"model.diffusion_model." + k: v for k, v in out.items()}


def clip_to_ldm(text_encoder, prefix: str = "cond_stage_model.transformer.") -> dict:
    return {prefix + "text_model." + k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}


def save_ldm_checkpoint(pipe, path, text_encoder: bool = True) -> None:
    """Denoiser and VAE in the original layout and, if asked (SD1.5 only), the CLIP text encoder."""
    denoiser = getattr(pipe, "transformer", None)
    state = sd3_transformer_to_original(denoiser) if denoiser is not None else unet_to_ldm(pipe.unet)
    state.update(vae_to_ldm(pipe.vae))
    if text_encoder:
        state.update(clip_to_ldm(pipe.text_encoder))
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
