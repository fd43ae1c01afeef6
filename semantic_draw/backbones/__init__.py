"""One small adapter per model family; ``adapter_for(pipe)`` picks the right one for a diffusers pipeline."""
from __future__ import annotations

from typing import Any

from ..errors import SemanticDrawError
from .base import Backbone, Cond
from .sd15 import SD15Backbone
from .sd3 import SD3Backbone
from .sdxl import SDXLBackbone

ADAPTERS: dict[str, type[Backbone]] = {"sd15": SD15Backbone, "sdxl": SDXLBackbone, "sd3": SD3Backbone}


def family_of_class(name: str) -> str | None:
    """The family of a diffusers pipeline class name ("StableDiffusionXLPipeline" -> "sdxl"), or None."""
    if name.startswith("StableDiffusion3"):
        return "sd3"
    if name.startswith("StableDiffusionXL"):
        return "sdxl"
    if name.startswith(("StableDiffusion", "LatentConsistencyModel")):
        return "sd15"
    return None


def family_of(pipe: Any) -> str:
    """"sd15", "sdxl" or "sd3", from the pipeline class or, failing that, from its components."""
    name = type(pipe).__name__
    if family_of_class(name):
        return family_of_class(name)
    if getattr(pipe, "transformer", None) is not None and hasattr(pipe.transformer.config, "joint_attention_dim"):
        return "sd3"
    unet = getattr(pipe, "unet", None)
    if unet is not None:
        return "sdxl" if unet.config.get("addition_embed_type") == "text_time" else "sd15"
    raise SemanticDrawError(f"{name} is not a pipeline this project supports (SD1.5, SDXL or SD3).")


def adapter_for(pipe: Any) -> type[Backbone]:
    return ADAPTERS[family_of(pipe)]


__all__ = ["ADAPTERS", "Backbone", "Cond", "SD15Backbone", "SDXLBackbone", "SD3Backbone", "adapter_for", "family_of", "family_of_class"]
