"""Loading weights: presets, hub ids, local diffusers folders, single .safetensors files, LoRAs, tiny VAEs.

Only safetensors are ever read: pickle files (.ckpt, .bin, .pt, .pth) can run code when unpickled and are refused
where a load would read them (a file given, a pipeline folder's components, a LoRA or VAE folder; other folders are
not looked at). Every local .safetensors file a load reads has its header checked first (``check_safetensors``: size,
JSON, dtypes, shapes, offsets), and whatever a checkpoint of any shape makes diffusers raise becomes one LoadError
(ResourceError when memory runs out). When weights cannot be fetched (no network, a gated repository) the error says
so and names the offline presets.
"""
from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import torch

from .backbones import registry
from .backbones.base import Backbone
from .errors import LoadError, ResourceError, SemanticDrawError
from .options import clipped, shown
from .presets import Preset, get_preset

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
OFFLINE_PRESETS = "tiny-sd15, tiny-sdxl, tiny-sd3"
MAX_SAFETENSORS_HEADER = 16 * 2 ** 20   # bytes of a .safetensors JSON header (SDXL's is ~0.3 MiB)
MAX_CONFIG_BYTES = 2 ** 20              # bytes of a model_index.json / adapter_config.json
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


# -- device and dtype ----------------------------------------------------------------------------------------------
def default_device_dtype(device: Any = None, dtype: Any = None) -> tuple[torch.device, torch.dtype]:
    """CUDA (fp16) when available, else Apple MPS (fp16), else CPU (fp32). Strings like "cuda", "float16" work."""
    try:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise LoadError(f"Unknown device {shown(device)} (try 'cuda', 'cuda:1', 'mps' or 'cpu').") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoadError(f"Device {device} asked for, but CUDA is not available here (a CPU-only torch build or no "
                        "visible GPU); use device='cpu'.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise LoadError(f"Device {device} asked for, but this machine has {torch.cuda.device_count()} GPU(s).")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LoadError("Device 'mps' asked for, but Apple's Metal (MPS) is not available here; use device='cpu'.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise LoadError(f"Unsupported device {device}; use 'cuda', 'cuda:1', 'mps' or 'cpu'.")
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
        f"The weights of {source!r} could not be loaded ({type(err).__name__}: {clipped(err)})."
        f"{hint} If this machine is offline, download them elsewhere into the Hugging Face cache, or use one of "
        f"the offline presets: {OFFLINE_PRESETS} (random tiny models, no download).")


def _refuse_pickle(path: Path) -> None:
    """Refuses a pickle file, or a folder a load would read pickle weights from; checks the headers of the
    .safetensors files it would read instead (``check_safetensors``)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise LoadError(f"{path.name} is a pickle file, which can run code when loaded; it is refused. "
                        "Use .safetensors weights (most models publish them).")
    if path.suffix.lower() == ".safetensors" and path.is_file():
        check_safetensors(path)
    if path.is_dir():
        for folder in _weight_folders(path):
            files = [f for f in folder.iterdir() if not f.is_dir()]   # pipes and link loops too: refused below
            if any(f.suffix.lower() in PICKLE_SUFFIXES for f in files) and not any(
                    f.suffix == ".safetensors" for f in files):
                raise LoadError(f"{folder} has only pickle weights (.bin/.ckpt), which can run code when "
                                "loaded; they are refused. Convert them to .safetensors.")
            for f in files:
                if f.suffix == ".safetensors":
                    check_safetensors(f)


def _weight_folders(path: Path) -> list[Path]:
    """The folders a load of the folder ``path`` reads weights from: itself, and the components its
    model_index.json names (a pipeline). Other folders (old checkpoints, extras) are not looked at."""
    folders = [path]
    if (path / "model_index.json").is_file():
        for name, value in _json_file(path / "model_index.json").items():
            if name.startswith("_") or not isinstance(value, list):
                continue
            if not re.fullmatch(r"[\w.-]+", name) or name in (".", ".."):
                raise LoadError(f"{path}: model_index.json names a component {shown(name)} that is not a folder "
                                "inside it.")
            if (path / name).is_dir():
                folders.append(path / name)
    return folders


def _json_file(path: str | Path, what: str | None = None) -> dict:
    """A JSON object from a small local file (at most MAX_CONFIG_BYTES), or one LoadError."""
    from .palette import parse_json
    from .scene import read_file
    what = what or str(path)
    try:
        value = parse_json(read_file(path, MAX_CONFIG_BYTES, what, "a JSON file"), what)
    except SemanticDrawError as err:
        raise LoadError(str(err)) from None
    if not isinstance(value, dict):
        raise LoadError(f"{what} must hold a JSON object, got {type(value).__name__}.")
    return value


def check_safetensors(path: str | Path) -> None:
    """Refuses (LoadError) a .safetensors file whose header is not what the format says: the 8-byte length, a JSON
    object of at most MAX_SAFETENSORS_HEADER bytes, each tensor a known dtype, a shape of whole numbers and
    data_offsets that match the shape and tile the data exactly (no gaps, no overlaps, nothing past the end)."""
    from .palette import parse_json
    from .scene import open_file
    name = Path(path).name
    try:
        with open_file(path, sys.maxsize, name, "a .safetensors file") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length < 2 or length > min(MAX_SAFETENSORS_HEADER, size - 8):
                raise LoadError(f"{name} is not a .safetensors file: its header length ({length}) does not fit the "
                                f"file ({size} bytes) or the limit of {MAX_SAFETENSORS_HEADER >> 20} MiB.")
            header = parse_json(f.read(length), f"{name}'s header")
    except LoadError:
        raise
    except SemanticDrawError as err:
        raise LoadError(f"{name} is not a valid .safetensors file: {err}") from None
    if not isinstance(header, dict):
        raise LoadError(f"{name} is not a valid .safetensors file: its header is not a JSON object.")
    spans = []
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise LoadError(f"{name}: __metadata__ must map names to text.")
            continue
        what = f"{name}: tensor {shown(key)}"
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str) or \
                entry["dtype"] not in SAFETENSORS_DTYPES:
            raise LoadError(f"{what} has no known dtype ({', '.join(SAFETENSORS_DTYPES)}).")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise LoadError(f"{what} has a shape that is not a list of whole numbers >= 0.")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise LoadError(f"{what} has data_offsets that are not two increasing whole numbers.")
        if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_DTYPES[entry["dtype"]]:
            raise LoadError(f"{what}: its data_offsets span {offsets[1] - offsets[0]} bytes, its shape and dtype "
                            "need another size.")
        spans.append(offsets)
    end = 0
    for start, stop in sorted(spans):
        if start != end:
            raise LoadError(f"{name}: the tensors' data overlap or leave gaps (at byte {start}); the file is damaged.")
        end = stop
    if end != size - 8 - length:
        raise LoadError(f"{name}: the tensors' data end at byte {end}, the file holds {size - 8 - length}; the file "
                        "is damaged or truncated.")


# -- family detection ----------------------------------------------------------------------------------------------
def _family_from_class(name: str, source: str) -> str:
    family = registry.family_of_class(name)
    if family is None:
        raise LoadError(f"{source!r} is a {name}; only {', '.join(registry.FAMILIES)} pipelines are supported.")
    return family


def _single_file_keys(path: str | Path) -> list[str]:
    from safetensors import safe_open
    check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as err:   # safetensors' own SafetensorError and whatever else a damaged file gives
        raise LoadError(f"{Path(path).name} is not a valid .safetensors file ({type(err).__name__}: "
                        f"{shown(str(err), 300)}).") from None


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
    name = _json_file(index, "model_index.json").get("_class_name", "")
    if not isinstance(name, str):
        raise LoadError(f"{source}: model_index.json's _class_name must be text, got {type(name).__name__}.")
    return _family_from_class(name, source)


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
    Whatever goes wrong is one LoadError (ResourceError when memory runs out).
    """
    for what, value in (("source", source), ("vae", vae), ("tiny_vae", tiny_vae), ("config", config)):
        if not (value is None and what != "source") and not isinstance(value, (str, os.PathLike)):
            raise LoadError(f"The {what} must be a hub id, a folder or a file (text), got {type(value).__name__}.")
    if family is not None and (not isinstance(family, str) or family not in registry.FAMILIES):
        raise LoadError(f"Unknown family {shown(family)}; choose one of {', '.join(registry.FAMILIES)}.")
    for what, value in (("keep_t5", keep_t5), ("fuse_loras", fuse_loras), ("local_files_only", local_files_only)):
        if not isinstance(value, bool) and not (value is None and what == "local_files_only"):
            raise LoadError(f"{what} must be True or False, got {shown(value)}.")
    device, dtype = default_device_dtype(device, dtype)
    items = _lora_items(loras)
    try:
        return _load_pipeline(str(source), family, items, vae, tiny_vae, config, keep_t5, device, dtype,
                              local_files_only, fuse_loras)
    except SemanticDrawError:
        raise
    except (MemoryError, torch.OutOfMemoryError):
        raise ResourceError(f"Not enough memory to load {shown(str(source), 300)}.") from None
    except Exception as err:   # whatever a checkpoint of any shape makes diffusers, transformers or torch raise
        raise LoadError(f"{shown(str(source), 300)} could not be loaded ({type(err).__name__}: "
                        f"{clipped(err)}).") from err


def _load_pipeline(source: str, family: str | None, loras: list, vae, tiny_vae, config, keep_t5: bool, device,
                   dtype, local_files_only: bool | None, fuse_loras: bool):
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
        classes = _json_file(index, "model_index.json")
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
    from .options import check_number
    if isinstance(loras, (str, os.PathLike)):
        loras = [loras]
    try:
        loras = list(loras)
    except TypeError:
        raise LoadError(f"loras must be a list of LoRAs, got {type(loras).__name__}.") from None
    items = []
    for item in loras:
        try:
            item = (item,) if isinstance(item, (str, os.PathLike)) else tuple(item)
        except TypeError:
            item = (item, None, None, None)   # not a sequence: refused just below
        if not 1 <= len(item) <= 3:
            raise LoadError(f"A LoRA is (source, weight_name, scale), not {shown(item)}.")
        source, weight_name, scale = item + (None, None, 1.0)[len(item):]
        if not isinstance(source, (str, os.PathLike)) or not isinstance(weight_name, (str, type(None))):
            raise LoadError(f"A LoRA is (source, weight_name, scale) with a text source and weight name, not "
                            f"{shown(item)}.")
        items.append((str(source), weight_name, check_number(scale, "A LoRA's scale", -100.0, 100.0,
                                                             error=LoadError)))
    return items


def _apply_loras(pipe, family: str, items: list, hub: dict, fuse: bool) -> None:
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
    config = _json_file(config_file, "adapter_config.json")
    if config.get("use_dora"):
        raise LoadError(f"{source}: DoRA adapters are not supported.")
    if not Path(weights_file).is_file():
        raise LoadError(f"{source} has no adapter_model.safetensors (pickle adapters are refused).")
    prefix = registry.get_family(family).denoiser
    check_safetensors(weights_file)
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
                           cover_alpha: float | None = None, tiny_vae: Any = None,
                           family: str | None = None) -> Backbone:
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
    preset = preset if isinstance(preset, Preset) else get_preset(preset)
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
