"""Named presets: which weights to load and how to sample them.

The real presets pair a base model with a few-step distillation LoRA, as in the paper. What each model card says
(checked on the Hugging Face model pages) is noted next to it. The ``tiny-*`` presets need no download: random
weights in the real shapes (see tiny.py), for tests and offline demos; their images are noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .backbones.registry import FAMILIES
from .errors import LoadError
from .options import MAX_GUIDANCE, MAX_STEPS, check_number, check_whole
from .schedule import LCM_REFERENCE_TIMESTEPS, SAMPLERS, SamplerSettings

Lora = tuple[str, Optional[str], float]   # (hub id, folder or .safetensors file; weight file name or None; scale)


@dataclass(frozen=True)
class Preset:
    name: str
    family: str                                  # "sd15" | "sdxl" | "sd3"
    description: str
    model: str | None                            # hub id / local folder / .safetensors file; None for tiny presets
    loras: tuple[Lora, ...] = ()
    vae: str | None = None                       # replacement VAE (hub id or folder)
    tiny_vae: str | None = None                  # AutoencoderTiny for cheap previews (hub id or folder)
    sampler: str = "lcm"                         # one of schedule.SAMPLERS
    steps: int = 4
    timesteps: tuple[float, ...] | None = None   # explicit step grid, overrides steps
    spacing: str | None = None                   # diffusers timestep_spacing for ddim / euler
    eta: float | None = None                     # None: the sampler's default
    guidance: float = 0.0                        # classifier-free guidance scale; 0 = none
    native_size: int = 512                       # px the model was trained at
    tile_size: int = 768                         # px of a view on large canvases
    cover_alpha: float = 0.3                     # mask strength where a later layer covers this one
    canvas: tuple[int, int] = (512, 512)         # default (height, width) px
    tiny: bool = False                           # random-weight offline model
    keep_t5: bool = False                        # SD3 only: also load the T5-XXL text encoder (~9 GB in fp16)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise LoadError(f"Preset {self.name!r}: unknown family {self.family!r}.")
        if self.sampler not in SAMPLERS:
            raise LoadError(f"Preset {self.name!r}: unknown sampler {self.sampler!r}.")
        if self.model is None and not self.tiny:
            raise LoadError(f"Preset {self.name!r} names no model.")
        what = f"Preset {self.name!r}:"
        check_whole(self.steps, f"{what} steps", 1, MAX_STEPS, error=LoadError)
        check_number(self.guidance, f"{what} guidance", 0.0, MAX_GUIDANCE, error=LoadError)
        check_number(self.cover_alpha, f"{what} cover_alpha", 0.0, 1.0, error=LoadError)
        for field_name in ("native_size", "tile_size"):
            check_whole(getattr(self, field_name), f"{what} {field_name}", 8, 8192, error=LoadError)
        if not (isinstance(self.canvas, tuple) and len(self.canvas) == 2):
            raise LoadError(f"{what} canvas must be (height, width), got {self.canvas!r}.")
        for side in self.canvas:
            check_whole(side, f"{what} canvas side", 8, 8192, error=LoadError)

    @property
    def settings(self) -> SamplerSettings:
        """How this preset samples."""
        return SamplerSettings(self.sampler, steps=self.steps, timesteps=self.timesteps, spacing=self.spacing,
                               eta=self.eta)


SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"   # the maintained mirror of runwayml/stable-diffusion-v1-5
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
SD3 = "stabilityai/stable-diffusion-3-medium-diffusers"  # gated: accept the licence on the Hub and log in first
TINY_TIMESTEPS = (999.0, 759.0, 499.0, 259.0)           # four of the reference LCM timesteps

PRESETS: dict[str, Preset] = {p.name: p for p in (
    # LCM-LoRA card: load_lora_weights("latent-consistency/lcm-lora-sdv1-5") (pytorch_lora_weights.safetensors),
    # LCMScheduler, 2-8 steps, guidance 0 (off) to 2. Timesteps: the reference's 5 steps of a 50-step LCM grid.
    Preset("sd15", "sd15", "SD1.5 + LCM-LoRA, 5 LCM steps (the paper's setting)", SD15,
           loras=(("latent-consistency/lcm-lora-sdv1-5", None, 1.0),), tiny_vae="madebyollin/taesd",
           sampler="lcm", steps=len(LCM_REFERENCE_TIMESTEPS), timesteps=LCM_REFERENCE_TIMESTEPS,
           guidance=0.0, native_size=512, tile_size=768, cover_alpha=0.3, canvas=(512, 512)),
    # Hyper-SD card: load_lora_weights(hf_hub_download("ByteDance/Hyper-SD", "Hyper-SD15-4steps-lora.safetensors")),
    # fuse_lora(), DDIMScheduler with timestep_spacing="trailing", 4 steps, guidance 0.
    Preset("sd15-hyper", "sd15", "SD1.5 + Hyper-SD 4-step LoRA, DDIM trailing", SD15,
           loras=(("ByteDance/Hyper-SD", "Hyper-SD15-4steps-lora.safetensors", 1.0),), tiny_vae="madebyollin/taesd",
           sampler="ddim", steps=4, spacing="trailing", guidance=0.0, native_size=512, tile_size=768,
           cover_alpha=0.3, canvas=(512, 512)),
    # SDXL-Lightning card: load_lora_weights(hf_hub_download("ByteDance/SDXL-Lightning",
    # "sdxl_lightning_4step_lora.safetensors")), fuse_lora(), EulerDiscreteScheduler timestep_spacing="trailing",
    # 4 steps, guidance_scale=0. madebyollin/sdxl-vae-fp16-fix decodes in fp16 without NaNs.
    Preset("sdxl", "sdxl", "SDXL + SDXL-Lightning 4-step LoRA, Euler trailing", SDXL,
           loras=(("ByteDance/SDXL-Lightning", "sdxl_lightning_4step_lora.safetensors", 1.0),),
           vae="madebyollin/sdxl-vae-fp16-fix", tiny_vae="madebyollin/taesdxl", sampler="euler", steps=4,
           spacing="trailing", guidance=0.0, native_size=1024, tile_size=1024, cover_alpha=0.1,
           canvas=(1024, 1024)),
    # Flash-SD3 card: a PEFT adapter (adapter_config.json + adapter_model.safetensors) applied to the transformer
    # (PeftModel.from_pretrained(transformer, "jasperai/flash-sd3")); pipeline loaded with text_encoder_3=None,
    # tokenizer_3=None; FlashFlowMatchEulerDiscreteScheduler, 4 steps, guidance 0. taesd3's card: AutoencoderTiny
    # as pipe.vae with shift_factor 0.
    Preset("sd3", "sd3", "SD3-medium + Flash-SD3 LoRA, 4 flash steps, without T5", SD3,
           loras=(("jasperai/flash-sd3", "adapter_model.safetensors", 1.0),), tiny_vae="madebyollin/taesd3",
           sampler="flash", steps=4, guidance=0.0, native_size=1024, tile_size=1024, cover_alpha=0.1,
           canvas=(1024, 1024)),
    Preset("tiny-sd15", "sd15", "Random tiny SD1.5-shaped model (offline; images are noise)", None,
           sampler="lcm", steps=4, timesteps=TINY_TIMESTEPS, native_size=64, tile_size=64, cover_alpha=0.3,
           canvas=(128, 128), tiny=True),
    Preset("tiny-sdxl", "sdxl", "Random tiny SDXL-shaped model (offline; images are noise)", None,
           sampler="euler", steps=4, spacing="trailing", native_size=64, tile_size=64, cover_alpha=0.1,
           canvas=(128, 128), tiny=True),
    Preset("tiny-sd3", "sd3", "Random tiny SD3-shaped model (offline; images are noise)", None,
           sampler="flash", steps=4, native_size=64, tile_size=64, cover_alpha=0.1, canvas=(128, 128), tiny=True),
)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise LoadError(f"Unknown preset {name!r}; known presets: {', '.join(PRESETS)}.") from None
