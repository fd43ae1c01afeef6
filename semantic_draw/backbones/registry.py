"""The family registry: every fact that differs between SD1.5, SDXL and SD3, in one entry per family.

An entry names the family's adapter class (which declares the family name, the parametrization, the size multiple
and the network call) and adds what the rest of the package needs to know: how to recognize the family's pipelines
and single-file checkpoints, how to load it, and its defaults (native size, tile size, cover alpha, the few-step
sampler, the 50-step reference baseline, its scheduler). Code outside ``backbones/`` asks the registry instead of
comparing family names, so a new family is one adapter class and one ``register(Family(...))`` call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import LoadError, OptionError
from ..schedule import LCM_REFERENCE_TIMESTEPS, SamplerSettings
from .base import Backbone


@dataclass(frozen=True)
class Family:
    adapter: type[Backbone]              # declares .family (the name), .prediction_type, .size_multiple
    pipeline: str                        # the diffusers pipeline class that loads this family
    pipeline_prefixes: tuple[str, ...]   # pipeline class names of the family start with one of these
    denoiser: str                        # the pipeline component holding the network: "unet" or "transformer"
    native_size: int                     # px the base model was trained at
    tile_factor: float                   # view size on large canvases, as a multiple of the native size
    cover_alpha: float                   # mask strength where a later layer covers this one (ALGORITHM.md 3)
    sampler: SamplerSettings             # few-step default for a model loaded without a preset
    reference: SamplerSettings           # the 50-step reference baseline ("multidiffusion")
    reference_guidance: float            # its classifier-free guidance scale
    scheduler_class: str                 # the diffusers scheduler of a model built from configs (tiny, bench)
    scheduler: dict                      # ... and its settings: the base model's noise schedule
    optional_components: tuple[str, ...] = ()   # components left out unless asked (SD3's T5 encoder)
    upcast_vae_in_fp16: bool = False     # the pipeline runs this VAE in float32 when the model is float16
    text_encoder_keys: dict = field(default_factory=dict)   # component -> key prefix in a single-file checkpoint
    detect: Callable[[Any], bool] | None = None             # recognizes a pipeline from its components
    single_file: Callable[[Sequence[str]], bool] | None = None   # recognizes a checkpoint from its key names

    @property
    def name(self) -> str:
        return self.adapter.family

    def build_scheduler(self):
        """A fresh scheduler with the family's noise schedule (for pipelines built from configs)."""
        import diffusers
        return getattr(diffusers, self.scheduler_class)(**self.scheduler)


FAMILIES: dict[str, Family] = {}
ADAPTERS: dict[str, type[Backbone]] = {}


def register(family: Family) -> Family:
    """Add (or replace) a family; from then on it loads, samples and streams like the built-in ones."""
    FAMILIES[family.name] = family
    ADAPTERS[family.name] = family.adapter
    return family


def unregister(name: str) -> None:
    FAMILIES.pop(name, None)
    ADAPTERS.pop(name, None)


def get_family(name: str) -> Family:
    if isinstance(name, str) and name in FAMILIES:
        return FAMILIES[name]
    raise OptionError(f"Unknown model family {name!r}; choose one of {', '.join(FAMILIES)}.")


def family_of_class(name: str) -> str | None:
    """The family of a diffusers pipeline class name ("StableDiffusionXLPipeline" -> "sdxl"): the longest prefix
    that matches wins. None when no family claims it."""
    best, length = None, -1
    for family in FAMILIES.values():
        for prefix in family.pipeline_prefixes:
            if name.startswith(prefix) and len(prefix) > length:
                best, length = family.name, len(prefix)
    return best


def family_of(pipe: Any) -> str:
    """The family of a pipeline, from its class or, failing that, from its components."""
    name = type(pipe).__name__
    found = family_of_class(name)
    if found:
        return found
    for family in FAMILIES.values():
        if family.detect is not None and family.detect(pipe):
            return family.name
    raise LoadError(f"{name} is not a pipeline this project supports ({', '.join(FAMILIES)}).")


def adapter_for(pipe: Any) -> type[Backbone]:
    return FAMILIES[family_of(pipe)].adapter


def family_of_single_file(keys: Sequence[str], filename: str) -> str:
    """The family of an original-format (LDM / SGM / SD3) checkpoint, from its key names."""
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        raise LoadError(f"{filename} looks like Stable Diffusion 2.x, which is not supported.")
    for family in FAMILIES.values():
        if family.single_file is not None and family.single_file(keys):
            return family.name
    raise LoadError(f"{filename} does not look like a checkpoint of {', '.join(FAMILIES)}; pass family= if it is one.")


def _has(keys: Sequence[str], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


# The built-in families. Scheduler settings are those of the base models' scheduler_config.json; the reference
# defaults (tile 768 px for SD1.5, cover alpha 0.3 / 0.1, guidance 7.5 / 7.0) are the paper's.
_SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
_DDIM_50 = SamplerSettings("ddim", steps=50, spacing="leading", quantize="none")


def _builtin() -> None:
    from .sd3 import SD3Backbone
    from .sd15 import SD15Backbone
    from .sdxl import SDXLBackbone

    def unet(pipe):
        return getattr(pipe, "unet", None)

    register(Family(
        SD15Backbone, "StableDiffusionPipeline", ("StableDiffusion", "LatentConsistencyModel"), "unet",
        native_size=512, tile_factor=1.5, cover_alpha=0.3,
        sampler=SamplerSettings("lcm", timesteps=LCM_REFERENCE_TIMESTEPS), reference=_DDIM_50, reference_guidance=7.5,
        scheduler_class="LCMScheduler", scheduler=dict(_SD_BETAS, timestep_spacing="leading", steps_offset=1),
        text_encoder_keys={"text_encoder": "cond_stage_model.transformer."},
        detect=lambda pipe: unet(pipe) is not None and unet(pipe).config.get("addition_embed_type") != "text_time",
        single_file=lambda keys: _has(keys, "model.diffusion_model.input_blocks.") and not _has(
            keys, "conditioner.embedders.", "model.diffusion_model.label_emb.")))
    register(Family(
        SDXLBackbone, "StableDiffusionXLPipeline", ("StableDiffusionXL",), "unet",
        native_size=1024, tile_factor=1.0, cover_alpha=0.1,
        sampler=SamplerSettings("euler", steps=4, spacing="trailing"), reference=_DDIM_50, reference_guidance=7.5,
        scheduler_class="EulerDiscreteScheduler", scheduler=dict(_SD_BETAS, timestep_spacing="trailing"),
        upcast_vae_in_fp16=True,
        text_encoder_keys={"text_encoder": "conditioner.embedders.0.transformer.",
                           "text_encoder_2": "conditioner.embedders.1.model."},
        detect=lambda pipe: unet(pipe) is not None and unet(pipe).config.get("addition_embed_type") == "text_time",
        single_file=lambda keys: _has(keys, "conditioner.embedders.", "model.diffusion_model.label_emb.")))
    register(Family(
        SD3Backbone, "StableDiffusion3Pipeline", ("StableDiffusion3",), "transformer",
        native_size=1024, tile_factor=1.0, cover_alpha=0.1,
        sampler=SamplerSettings("flash", steps=4), reference=SamplerSettings("flow", steps=50, quantize="none"),
        reference_guidance=7.0, scheduler_class="FlowMatchEulerDiscreteScheduler",
        scheduler=dict(num_train_timesteps=1000, shift=3.0),
        optional_components=("text_encoder_3", "tokenizer_3"),
        text_encoder_keys={"text_encoder": "text_encoders.clip_l.", "text_encoder_2": "text_encoders.clip_g.",
                           "text_encoder_3": "text_encoders.t5xxl."},
        detect=lambda pipe: getattr(pipe, "transformer", None) is not None and hasattr(
            pipe.transformer.config, "joint_attention_dim"),
        single_file=lambda keys: _has(keys, "model.diffusion_model.joint_blocks.", "joint_blocks.")))


_builtin()
