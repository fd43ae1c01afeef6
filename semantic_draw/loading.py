"""Loading weights: presets, hub ids, local diffusers folders, single .safetensors files, LoRAs, tiny VAEs.

Only safetensors are ever read: pickle files (.ckpt, .bin, .pt, .pth) can run code when unpickled and are refused.
When weights cannot be fetched (no network, a gated repository) the error says so and names the offline presets.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

import torch

from .backbones import registry
from .backbones.base import Backbone
from .errors import LoadError
from .presets import Preset, get_preset

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
OFFLINE_PRESETS = "tiny-sd15, tiny-sdxl, tiny-sd3"
_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


# -- device and dtype ----------------------------------------------------------------------------------------------
def default_device_dtype(device: Any = None, dtype: Any = None) -> tuple[torch.device, torch.dtype]:
    """CUDA (fp16) when available, else Apple MPS (fp16), else CPU (fp32). Strings like "cuda", "float16" work."""
    try:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise LoadError(f"Unknown device {device!r} (try 'cuda', 'cuda:1', 'mps' or 'cpu').") from err
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else torch.float16
    elif isinstance(dtype, str):
        if dtype.lower().removeprefix("torch.") not in _DTYPES:
            raise LoadError(f"Unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}.")
        dtype = _DTYPES[dtype.lower().removeprefix("torch.")]
    elif not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LoadError(f"Unknown dtype {dtype!r}.")
    return device, dtype


# -- errors --------------------------------------------------------------------------------------------------------
def _fetch_error(source: str, err: Exception, single_file: bool = False) -> LoadError:
    from huggingface_hub.errors import GatedRepoError
    hint = ""
    if isinstance(err, GatedRepoError):
        hint = " The repository is gated: accept its licence on huggingface.co and log in (`hf auth login`)."
    elif single_file:
        hint = " A single-file checkpoint also needs its component configs: pass config=<local diffusers folder>."
    return LoadError(
        f"The weights of {source!r} could not be loaded ({type(err).__name__}: {str(err).splitlines()[0][:300]})."
        f"{hint} If this machine is offline, download them elsewhere into the Hugging Face cache, or use one of "
        f"the offline presets: {OFFLINE_PRESETS} (random tiny models, no download).")


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise LoadError(f"{path.name} is a pickle file, which can run code when loaded; it is refused. "
                                "Use .safetensors weights (most models publish them).")
    if path.is_dir():
        for folder in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            files = [f for f in folder.iterdir() if f.is_file()]
            if any(f.suffix.lower() in PICKLE_SUFFIXES for f in files) and not any(
                    f.suffix == ".safetensors" for f in files):
                raise LoadError(f"{folder} has only pickle weights (.bin/.ckpt), which can run code when "
                                        "loaded; they are refused. Convert them to .safetensors.")


# -- family detection ----------------------------------------------------------------------------------------------
def _family_from_class(name: str, source: str) -> str:
    family = registry.family_of_class(name)
    if family is None:
        raise LoadError(f"{source!r} is a {name}; only {', '.join(registry.FAMILIES)} pipelines are supported.")
    return family


def _single_file_keys(path: str | Path) -> list[str]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def family_of_single_file(path: str | Path) -> str:
    """The family of an original-format (LDM / SGM / SD3) checkpoint, from its key names."""
    return registry.family_of_single_file(_single_file_keys(path), Path(path).name)


_HUB_FILE_URL = re.compile(r"https?://huggingface\.co/([^/]+/[^/]+)/(?:blob|resolve)/([^/]+)/(.+)$")


def _download_hub_file(url: str, local_files_only: bool | None) -> str:
    """A single-file checkpoint given as a huggingface.co URL, fetched into the hub cache (safetensors only)."""
    from huggingface_hub import hf_hub_download
    repo, revision, filename = _HUB_FILE_URL.match(url).groups()
    _refuse_pickle(Path(filename))
    try:
        return hf_hub_download(repo, filename, revision=revision, local_files_only=bool(local_files_only))
    except OSError as err:
        raise _fetch_error(url, err, single_file=True) from err


def _is_single_file(source: str) -> bool:
    return source.lower().endswith(".safetensors") or source.lower().endswith(PICKLE_SUFFIXES)


def _detect_family(source: str, local_files_only: bool | None) -> str:
    if _is_single_file(source):
        return family_of_single_file(source)
    if Path(source).is_dir():
        index = Path(source) / "model_index.json"
        if not index.is_file():
            raise LoadError(f"{source} is not a diffusers pipeline folder (no model_index.json).")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HFValidationError
        try:
            index = hf_hub_download(source, "model_index.json", local_files_only=bool(local_files_only))
        except HFValidationError as err:
            raise LoadError(f"{source!r} is neither a local file or folder nor a hub id "
                                    "(owner/name).") from err
        except OSError as err:
            raise _fetch_error(source, err) from err
    return _family_from_class(json.loads(Path(index).read_text()).get("_class_name", ""), source)


# -- pipelines -----------------------------------------------------------------------------------------------------
def _pipeline_class(family: str):
    import diffusers
    return getattr(diffusers, registry.get_family(family).pipeline)


def load_pipeline(source: str | os.PathLike, family: str | None = None, loras: Iterable = (), vae: str | None = None,
                  tiny_vae: str | None = None, config: str | None = None, keep_t5: bool = False,
                  device: Any = None, dtype: Any = None, local_files_only: bool | None = None,
                  fuse_loras: bool = True):
    """Load an SD1.5 / SDXL / SD3 diffusers pipeline from a hub id, a local diffusers folder, or one original-format
    ``.safetensors`` file (``config=`` names a diffusers folder or hub id holding the component configs).

    loras: items ``(source, weight_name or None, scale)`` (or just ``source``): hub ids, local folders or
    ``.safetensors`` files, in diffusers/kohya format or PEFT adapters (adapter_config.json). They are fused into the
    weights unless ``fuse_loras=False`` (then they stay as named adapters "lora0", "lora1", ...).
    vae / tiny_vae: replacement AutoencoderKL / an AutoencoderTiny (attached as ``pipe.tiny_vae``).
    keep_t5: SD3 only; by default the 4.7B-parameter T5 encoder is not loaded and its tokens are zeros.
    """
    source = str(source)
    if family is not None and family not in registry.FAMILIES:
        raise LoadError(f"Unknown family {family!r}; choose one of {', '.join(registry.FAMILIES)}.")
    device, dtype = default_device_dtype(device, dtype)
    is_file = _is_single_file(source)
    if is_file and _HUB_FILE_URL.match(source):
        source = _download_hub_file(source, local_files_only)
    if is_file or Path(source).exists():
        if not Path(source).exists():
            raise LoadError(f"No such file: {source}")
        _refuse_pickle(Path(source))
        if config is not None and Path(config).is_dir():
            _refuse_pickle(Path(config))
    family = family or _detect_family(source, local_files_only)
    spec = registry.get_family(family)
    cls = _pipeline_class(family)
    hub = {} if local_files_only is None else {"local_files_only": local_files_only}
    kwargs: dict[str, Any] = {"dtype": dtype, **hub}
    if not keep_t5:
        kwargs.update({name: None for name in spec.optional_components})
    if vae is not None:
        from diffusers import AutoencoderKL
        kwargs["vae"] = _load_model(AutoencoderKL, vae, dtype, hub)
    try:
        if is_file:
            pipe = _from_single_file(cls, source, family, config, kwargs)
        else:
            pipe = cls.from_pretrained(source, use_safetensors=True, **kwargs)
    except OSError as err:
        raise _fetch_error(source, err, single_file=is_file) from err
    _apply_loras(pipe, family, loras, hub, fuse_loras)
    if spec.upcast_vae_in_fp16 and dtype == torch.float16 and pipe.vae.config.get("force_upcast", False):
        pipe.vae.to(torch.float32)   # the original SDXL VAE overflows in fp16 (as the SDXL pipeline upcasts it)
    pipe.to(device)
    if tiny_vae is not None:
        from diffusers import AutoencoderTiny
        pipe.tiny_vae = _load_model(AutoencoderTiny, tiny_vae, dtype, hub).to(device).eval()
    return pipe


def _from_single_file(cls, source: str, family: str, config: str | None, kwargs: dict):
    """from_single_file, with the text encoders a checkpoint lacks (SD3 files often ship without them) loaded from
    ``config`` (a diffusers folder or hub id of the base model, with weights)."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError
    keys = _single_file_keys(source)
    missing = [name for name, prefix in registry.get_family(family).text_encoder_keys.items()
               if name not in kwargs and not any(k.startswith(prefix) for k in keys)]
    if missing and config is None:
        raise LoadError(f"{Path(source).name} has no weights for {', '.join(missing)}; pass config=<diffusers "
                                "folder or hub id of its base model> to load them from there.")
    if missing:
        import transformers
        index = Path(config) / "model_index.json"
        if not index.is_file():
            from huggingface_hub import hf_hub_download
            index = hf_hub_download(config, "model_index.json", local_files_only=bool(kwargs.get("local_files_only")))
        classes = json.loads(Path(index).read_text())
        hub = {k: v for k, v in kwargs.items() if k == "local_files_only"}
        for name in missing:
            encoder_cls = getattr(transformers, classes[name][1])
            kwargs[name] = encoder_cls.from_pretrained(config, subfolder=name, dtype=kwargs["dtype"],
                                                       use_safetensors=True, **hub)
    try:
        return cls.from_single_file(source, config=config, **kwargs)
    except SingleFileComponentError as err:
        raise LoadError(f"{Path(source).name}: {err.message.splitlines()[0]}") from err


def _load_model(cls, source: str, dtype: torch.dtype, hub: dict):
    if Path(source).exists():
        _refuse_pickle(Path(source))
    try:
        return cls.from_pretrained(source, dtype=dtype, use_safetensors=True, **hub)
    except OSError as err:
        raise _fetch_error(source, err) from err


# -- LoRAs ---------------------------------------------------------------------------------------------------------
def _lora_items(loras: Iterable) -> list[tuple[str, str | None, float]]:
    items = []
    for item in loras:
        item = (item,) if isinstance(item, (str, os.PathLike)) else tuple(item)
        if not 1 <= len(item) <= 3:
            raise LoadError(f"A LoRA is (source, weight_name, scale), not {item!r}.")
        source, weight_name, scale = item + (None, None, 1.0)[len(item):]
        items.append((str(source), weight_name, float(scale)))
    return items


def _apply_loras(pipe, family: str, loras: Iterable, hub: dict, fuse: bool) -> None:
    items = _lora_items(loras)
    names = []
    for i, (source, weight_name, scale) in enumerate(items):
        name = f"lora{i}"
        path = Path(source)
        if path.exists():
            _refuse_pickle(path)
        elif source.lower().endswith(PICKLE_SUFFIXES) or str(weight_name or "").lower().endswith(PICKLE_SUFFIXES):
            raise LoadError(f"LoRA {source} {weight_name or ''}: pickle weights are refused; use .safetensors.")
        try:
            peft = _peft_adapter(source, weight_name, family, hub)
            if peft is not None:
                pipe.load_lora_weights(peft, adapter_name=name)
            else:
                extra = {"weight_name": weight_name} if weight_name else {}
                pipe.load_lora_weights(source, adapter_name=name, use_safetensors=True, **extra, **hub)
        except OSError as err:
            raise _fetch_error(source, err) from err
        names.append(name)
    if not names:
        return
    pipe.set_adapters(names, adapter_weights=[scale for _, _, scale in items])
    if fuse:
        pipe.fuse_lora(adapter_names=names)
        pipe.unload_lora_weights()   # the deltas now live in the base weights


def _peft_adapter(source: str, weight_name: str | None, family: str, hub: dict) -> dict | None:
    """A PEFT adapter (adapter_config.json + adapter_model.safetensors, as jasperai/flash-sd3) as a diffusers LoRA
    state dict with the lora_alpha / r scaling folded into lora_B; None when ``source`` is not a PEFT adapter."""
    if source.lower().endswith(".safetensors") or (weight_name and weight_name != "adapter_model.safetensors"):
        return None
    if Path(source).is_dir():
        folder = Path(source)
        if not (folder / "adapter_config.json").is_file():
            return None
        config_file, weights_file = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    elif weight_name == "adapter_model.safetensors":
        from huggingface_hub import hf_hub_download
        config_file = hf_hub_download(source, "adapter_config.json", **hub)
        weights_file = hf_hub_download(source, "adapter_model.safetensors", **hub)
    else:
        return None
    from safetensors.torch import load_file
    config = json.loads(Path(config_file).read_text())
    if config.get("use_dora"):
        raise LoadError(f"{source}: DoRA adapters are not supported.")
    if not Path(weights_file).is_file():
        raise LoadError(f"{source} has no adapter_model.safetensors (pickle adapters are refused).")
    prefix = registry.get_family(family).denoiser
    weights = load_file(str(weights_file))
    out = {}
    for key, tensor in weights.items():
        module, _, rest = key.removeprefix("base_model.model.").partition(".lora_")
        if rest.startswith("B."):   # PEFT scales the whole lora_B output (weight and bias) by alpha / r
            rank = weights[key.rpartition(".lora_B.")[0] + ".lora_A.weight"].shape[0]
            alpha = next((a for pattern, a in config.get("alpha_pattern", {}).items()
                          if re.fullmatch(rf"(.*\.)?(?:{pattern})", module)), config.get("lora_alpha", rank))
            tensor = tensor * (alpha / (rank ** 0.5 if config.get("use_rslora") else rank))
        out[f"{prefix}.{module}.lora_{rest}"] = tensor
    return out


# -- backbones -----------------------------------------------------------------------------------------------------
def backbone_from_pipeline(pipe, native_size: int | None = None, tile_size: int | None = None,
                           cover_alpha: float | None = None, tiny_vae: Any = None, family: str | None = None) -> Backbone:
    """Wrap a loaded pipeline in its family's adapter. Defaults come from the family registry: native size from the
    denoiser's sample size, the family's tile size (a multiple of the native size) and cover alpha; the tiny VAE
    from ``pipe.tiny_vae`` if present."""
    spec = registry.get_family(family or registry.family_of(pipe))
    denoiser = getattr(pipe, spec.denoiser)
    native = native_size or int(denoiser.config.sample_size) * 8
    return spec.adapter(pipe, native_size=native, tile_size=tile_size or int(native * spec.tile_factor),
                        cover_alpha=spec.cover_alpha if cover_alpha is None else cover_alpha,
                        tiny_vae=tiny_vae if tiny_vae is not None else getattr(pipe, "tiny_vae", None))


def load_backbone(preset: str | Preset, device: Any = None, dtype: Any = None) -> Backbone:
    """The backbone of a preset (by name or a Preset), on ``device`` in ``dtype`` (defaults: default_device_dtype)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if preset.tiny:
        from .tiny import build_tiny_pipeline
        device, dtype = default_device_dtype(device, dtype)
        pipe = build_tiny_pipeline(preset.family, with_t5=preset.keep_t5)
        for module in [*pipe.components.values(), pipe.tiny_vae]:
            if isinstance(module, torch.nn.Module):
                module.to(device)
                if dtype != torch.float32:   # built in float32; casting warns, so only when asked
                    module.to(dtype)
    else:
        pipe = load_pipeline(preset.model, family=preset.family, loras=preset.loras, vae=preset.vae,
                             tiny_vae=preset.tiny_vae, keep_t5=preset.keep_t5, device=device, dtype=dtype)
    return backbone_from_pipeline(pipe, native_size=preset.native_size, tile_size=preset.tile_size,
                                  cover_alpha=preset.cover_alpha)
