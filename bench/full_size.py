"""Full-size SD1.5 / SDXL / SD3-medium pipelines with RANDOM weights, built from config dicts (no download).

Random weights cost exactly what real weights cost (same shapes, same kernels), so these models time the real
architectures offline. Tokenizers are the offline byte-level CLIP tokenizer of the tiny presets
(semantic_draw/tiny.py); the text encoders keep the real vocabulary size (49408) so that every parameter
is there. The T5 encoder of SD3 is left out, as the `sd3` preset does (its tokens are zeros).

Where the numbers come from (the components' config.json files on the Hugging Face Hub):
- SD1.5: stable-diffusion-v1-5/stable-diffusion-v1-5 unet/, text_encoder/ (CLIP ViT-L/14), vae/.
- SDXL: stabilityai/stable-diffusion-xl-base-1.0 unet/, text_encoder/ (CLIP-L), text_encoder_2/ (OpenCLIP bigG
  with projection), vae/.
- SD3: stabilityai/stable-diffusion-3-medium-diffusers transformer/, text_encoder/ (CLIP-L with projection),
  text_encoder_2/ (CLIP-G with projection), vae/ (16 channels, no quant convs).
- Schedulers: the family registry's (semantic_draw/backbones/registry.py).
- Tiny VAEs: madebyollin/taesd, taesdxl, taesd3 (AutoencoderTiny: 64 channels, blocks (1,3,3,3) / (3,3,3,1)).
Checked against copies of those config.json files found with the search tool (Hub pages such as
huggingface.co/*/trained-sd3/blob/main/text_encoder_2/config.json copied from the SD3-medium snapshot, an offline
SDXL set-up script reproducing the SDXL-base unet/vae/text_encoder configs, SD3-medium transformer configs in
several repositories, and taef1-style AutoencoderTiny config.json pages). Run this file to print parameter counts
built on the meta device (nothing allocated): `python bench/full_size.py`.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0)

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, norm_eps=1e-5, act_fn="silu")

SD3_MEDIUM_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=192)

# CLIP text towers. Token ids: bos 0, eos 1, pad 1, as the offline byte-level tokenizer numbers them.
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              max_position_embeddings=77, projection_dim=1280, hidden_act="gelu", layer_norm_eps=1e-5)
TOKEN_IDS = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1)

VAE = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           norm_num_groups=32, act_fn="silu")
VAE_EXTRA = {
    "sd15": dict(latent_channels=4, sample_size=512, scaling_factor=0.18215),
    "sdxl": dict(latent_channels=4, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
    "sd3": dict(latent_channels=16, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609,
                use_quant_conv=False, use_post_quant_conv=False),
}
TINY_VAE = dict(encoder_block_out_channels=(64, 64, 64, 64), decoder_block_out_channels=(64, 64, 64, 64),
                num_encoder_blocks=(1, 3, 3, 3), num_decoder_blocks=(3, 3, 3, 1))

# Published sizes of the denoisers in parameters (SD1.5 UNet 859,520,964; SDXL-base UNet 2,567,463,684; SD3-medium
# MMDiT "2B", 2,028,328,000), what `python bench/full_size.py` compares against.
REFERENCE_PARAMS = {"sd15": 859_520_964, "sdxl": 2_567_463_684, "sd3": 2_028_328_000}


def _clip(cls_name: str, config: dict):
    import transformers
    return getattr(transformers, cls_name)(transformers.CLIPTextConfig(**config, **TOKEN_IDS))


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _networks(family: str) -> dict:
    """The family's text encoders and denoiser, full size (built inside the device / dtype context)."""
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel
    builders = {
        "sd15": lambda: dict(text_encoder=_clip("CLIPTextModel", CLIP_L), unet=UNet2DConditionModel(**SD15_UNET)),
        "sdxl": lambda: dict(text_encoder=_clip("CLIPTextModel", CLIP_L),
                             text_encoder_2=_clip("CLIPTextModelWithProjection", CLIP_G),
                             unet=UNet2DConditionModel(**SDXL_UNET)),
        "sd3": lambda: dict(text_encoder=_clip("CLIPTextModelWithProjection", CLIP_L),
                            text_encoder_2=_clip("CLIPTextModelWithProjection", CLIP_G),
                            transformer=SD3Transformer2DModel(**SD3_MEDIUM_TRANSFORMER)),
    }
    return builders[family]()


# What each pipeline class needs besides its networks, VAE, tokenizers, scheduler and optional (left out) parts.
PIPELINE_EXTRA = {"sd15": dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False),
                  "sdxl": dict(add_watermarker=False)}


def build_full_pipeline(family: str, device="cpu", dtype=torch.float32):
    """The family's diffusers pipeline in full size, random weights, on ``device`` in ``dtype``; the tiny VAE rides
    along as ``pipe.tiny_vae``. device="meta" allocates nothing (for counting parameters)."""
    import diffusers
    from diffusers import AutoencoderKL, AutoencoderTiny
    from semantic_draw.backbones import get_family
    from semantic_draw.tiny import clip_tokenizer
    if family not in VAE_EXTRA:
        raise ValueError(f"No full-size build of family {family!r}; choose one of {', '.join(VAE_EXTRA)}.")
    spec = get_family(family)
    with torch.device(device), _default_dtype(dtype), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)   # weights drawn straight on the device, in the target dtype (no float32 copy first)
        vae = AutoencoderKL(**VAE, **VAE_EXTRA[family])
        tiny_vae = AutoencoderTiny(**TINY_VAE, latent_channels=VAE_EXTRA[family]["latent_channels"])
        nets = _networks(family)
    # Schedulers and tokenizers hold CPU tables: built outside the device context.
    tokenizers = {name.replace("text_encoder", "tokenizer"): clip_tokenizer() for name in nets
                  if name.startswith("text_encoder")}
    left_out = {name: None for name in spec.optional_components}
    pipe = getattr(diffusers, spec.pipeline)(vae=vae, scheduler=spec.build_scheduler(), **tokenizers, **nets,
                                             **left_out, **PIPELINE_EXTRA.get(family, {}))
    for module in [*pipe.components.values(), tiny_vae]:
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    pipe.tiny_vae = tiny_vae
    return pipe


def parameter_counts(pipe) -> dict[str, int]:
    """Parameters per component (the tiny VAE included)."""
    parts = {name: m for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    parts["tiny_vae"] = pipe.tiny_vae
    return {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}


def main() -> None:
    print("| family | denoiser params | published | difference | other components |")
    print("|---|---|---|---|---|")
    for family in VAE_EXTRA:
        counts = parameter_counts(build_full_pipeline(family, device="meta"))
        from semantic_draw.backbones import get_family
        main_part = counts.pop(get_family(family).denoiser)
        ref = REFERENCE_PARAMS[family]
        others = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in counts.items())
        print(f"| {family} | {main_part:,} | {ref / 1e9:.3f}B | {100 * (main_part - ref) / ref:+.2f}% | {others} |")


if __name__ == "__main__":
    main()
