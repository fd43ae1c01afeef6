"""Tiny random-weight pipelines (SD1.5, SDXL, SD3 shapes) for offline tests, demos and benchmarks of the plumbing.

Built from config dicts in code, like diffusers' own pipeline tests, with tokenizers built in memory (a byte-level
CLIP BPE vocabulary with no merges, and a character-level T5 unigram vocabulary), so nothing is downloaded. The
weights are random: the images are noise, but every shape, dtype, conditioning path and VAE convention is real.
Sizes: the VAE downsamples by 8 (four blocks), the denoisers take 8x8 latents (64 px views) and more.
"""
from __future__ import annotations

import string

import torch
from diffusers import (AutoencoderKL, AutoencoderTiny, SD3Transformer2DModel, StableDiffusion3Pipeline,
                       StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel)
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5Config,
                          T5EncoderModel, T5Tokenizer)

from .backbones.registry import get_family
from .errors import OptionError

TEXT_DIM = 16          # hidden size of each tiny CLIP text encoder
MAX_TOKENS = 77        # CLIP context length, as in the real models


def clip_tokenizer() -> CLIPTokenizer:
    """Byte-level CLIP tokenizer: one token per byte (plus end-of-word variants) and the two special tokens."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def t5_tokenizer() -> T5Tokenizer:
    """Character-level T5 tokenizer (unigram over single characters)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    pieces += [("\u2581" + c, -2.5) for c in string.ascii_lowercase]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _clip_config(vocab_size: int, projection_dim: int = TEXT_DIM) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM,
                          num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=MAX_TOKENS,
                          projection_dim=projection_dim, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                          hidden_act="gelu")


def _vae(latent_channels: int, **extra) -> AutoencoderKL:
    return AutoencoderKL(block_out_channels=(4, 4, 4, 4), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=1,
                         latent_channels=latent_channels, sample_size=64, **extra)


def _tiny_vae(latent_channels: int) -> AutoencoderTiny:
    return AutoencoderTiny(encoder_block_out_channels=(4, 4, 4, 4), decoder_block_out_channels=(4, 4, 4, 4),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
                           latent_channels=latent_channels)


def _unet(cross_attention_dim: int, **extra) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=2, attention_head_dim=2, cross_attention_dim=cross_attention_dim, **extra)


def _sd15():
    tok = clip_tokenizer()
    return StableDiffusionPipeline(
        vae=_vae(4, scaling_factor=0.18215), text_encoder=CLIPTextModel(_clip_config(len(tok))), tokenizer=tok,
        unet=_unet(TEXT_DIM), scheduler=get_family("sd15").build_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False), _tiny_vae(4)


def _sdxl():
    tok = clip_tokenizer()
    add_dim = 4   # per time id; the pooled CLIP-G embedding (TEXT_DIM) comes on top: 6 * 4 + 16
    unet = _unet(2 * TEXT_DIM, addition_embed_type="text_time", addition_time_embed_dim=add_dim,
                 projection_class_embeddings_input_dim=6 * add_dim + TEXT_DIM, use_linear_projection=True)
    return StableDiffusionXLPipeline(
        vae=_vae(4, scaling_factor=0.13025), text_encoder=CLIPTextModel(_clip_config(len(tok))),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(len(tok))), tokenizer=tok, tokenizer_2=clip_tokenizer(),
        unet=unet, scheduler=get_family("sdxl").build_scheduler(),
        add_watermarker=False), _tiny_vae(4)


def _sd3(with_t5: bool):
    tok = clip_tokenizer()
    joint_dim = 2 * TEXT_DIM   # CLIP-L and CLIP-G token embeddings side by side (T5 width, when present)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=joint_dim, caption_projection_dim=16,
        pooled_projection_dim=2 * TEXT_DIM, pos_embed_max_size=32)
    t5 = t5_tok = None
    if with_t5:
        t5_tok = t5_tokenizer()
        t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=joint_dim, d_kv=8, d_ff=joint_dim, num_layers=1,
                                     num_heads=2, relative_attention_num_buckets=8, decoder_start_token_id=0))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=get_family("sd3").build_scheduler(),
        vae=_vae(16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=CLIPTextModelWithProjection(_clip_config(len(tok))), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(len(tok))), tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5, tokenizer_3=t5_tok)
    return pipe, _tiny_vae(16)


_BUILDERS = {"sd15": lambda with_t5: _sd15(), "sdxl": lambda with_t5: _sdxl(), "sd3": _sd3}


def build_tiny(family: str, seed: int = 0, with_t5: bool = False):
    """(pipeline, tiny VAE) with random weights drawn from ``seed``; the global RNG is left untouched."""
    if family not in _BUILDERS:
        raise OptionError(f"There is no tiny model of family {family!r}; choose one of {', '.join(_BUILDERS)}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe, tiny_vae = _BUILDERS[family](with_t5)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipe, tiny_vae.eval()


def build_tiny_pipeline(family: str, seed: int = 0, with_t5: bool = False):
    """A random-weight pipeline in the family's real shapes (no download); its tiny VAE rides along as
    ``pipe.tiny_vae``. The global RNG is untouched."""
    pipe, tiny_vae = build_tiny(family, seed=seed, with_t5=with_t5)
    pipe.tiny_vae = tiny_vae
    return pipe
