"""Scenes as plain data: a canvas, a background and semantic brushes (prompt + painted mask).

`Scene.validate()` turns what a user or the app hands in into a normalized scene (bool masks at canvas size,
resolved negative prompts, checked numbers) or raises one `SemanticDrawError` that names the bad field.
`Scene.save` / `Scene.load` read and write palette files: a folder or `.zip` holding `scene.json` plus RGBA PNG masks
(alpha = mask) and an optional background image. No torch, diffusers or gradio here.
"""

from __future__ import annotations

import colorsys
import copy
import io
import json
import math
import os
import posixpath
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import SemanticDrawError

MAX_SIDE = 8192                      # largest canvas side accepted by validate() unless max_side= says otherwise
MAX_IMAGE_SIDE = 16384               # largest side of an image file we agree to decode (masks, backgrounds)
MAX_PALETTE_BYTES = 512 * 1024 ** 2  # cap on the uncompressed size of a palette .zip
ASPECT_TOLERANCE = 0.01              # masks / images within 1 % of the canvas aspect ratio are resized, not refused
PALETTE_FORMAT = "semantic-draw-palette/1"
_KNOWN_KEYS = {"format", "name", "height", "width", "negative_prompt", "background", "layers"}

# Hand-picked, well separated colours for the first brushes; golden-angle hues after that.
_BASE_COLORS = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 200, 200),
    (240, 50, 230), (170, 200, 40), (250, 160, 190), (0, 128, 128), (170, 110, 40), (128, 128, 0),
]


def palette_colors(n: int) -> list[tuple[int, int, int]]:
    """`n` distinct RGB colours, one per brush, the same for every call (brush i always gets colour i)."""
    colors = list(_BASE_COLORS[:n])
    for i in range(len(colors), n):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


@dataclass(eq=False)
class Layer:
    """One semantic brush. `mask`: PIL image (alpha if it has one, else non-black), numpy array (bool, or numbers
    where > 0 is painted), an object with `__array__`, or a path to an image file."""
    prompt: str
    mask: Any = None
    name: str = ""
    negative_prompt: str | None = None   # None: the scene's negative_prompt
    mask_strength: float = 1.0           # alpha a_p in [0, 1]
    mask_blur: float = 8.0               # Gaussian std in pixels, >= 0
    prompt_strength: float = 1.0         # k_p in [0, 1]


@dataclass(eq=False)
class Background:
    """What lies under every brush: a prompt and, for editing / inpainting, an optional image."""
    prompt: str = ""
    negative_prompt: str | None = None   # None: the scene's negative_prompt
    image: Any = None                    # PIL image, path, or numpy RGB (uint8, or float in [0, 1])


@dataclass(eq=False)
class Scene:
    """A canvas of `height` x `width` pixels; `layers` go bottom to top (later layers sit on top).
    `extra` keeps unknown top-level keys of a palette file (e.g. "about", "suggested") so saving keeps them."""
    height: int
    width: int
    layers: list[Layer] = field(default_factory=list)
    background: Background = field(default_factory=Background)
    negative_prompt: str = ""
    name: str = ""
    extra: dict = field(default_factory=dict)

    def validate(self, max_side: int = MAX_SIDE, multiple: int = 8) -> Scene:
        """A new normalized scene, or one SemanticDrawError naming the bad field. Does not change `self`."""
        height, width = _check_canvas(self.height, self.width, max_side, multiple)
        negative = _check_text(self.negative_prompt, "The scene's negative_prompt")
        name = _check_text(self.name, "The scene's name")
        if not isinstance(self.extra, dict):
            raise SemanticDrawError(f"The scene's extra must be a dict, got {type(self.extra).__name__}.")
        if not isinstance(self.layers, (list, tuple)):
            raise SemanticDrawError(f"The scene's layers must be a list of Layer, got {type(self.layers).__name__}.")
        layers = [_validate_layer(layer, i + 1, height, width, negative) for i, layer in enumerate(self.layers)]
        background = _validate_background(self.background, height, width, negative)
        if not layers and not background.prompt.strip() and background.image is None:
            raise SemanticDrawError("Nothing to draw: add a brush or a background prompt.")
        return Scene(height, width, layers, background, negative, name, copy.deepcopy(self.extra))

    def resized(self, height: int | None = None, width: int | None = None, *, max_side: int = MAX_SIDE) -> Scene:
        """A validated copy at a new canvas size: masks nearest-resized, background image Lanczos-resized.
        Give one side to keep the aspect ratio (the other is rounded to a multiple of 8); give both to stretch."""
        scene = self.validate(max_side=max_side)
        if height is None and width is None:
            raise SemanticDrawError("resized() needs a height, a width or both.")
        if height is None:
            height = max(8, round(width * scene.height / scene.width / 8) * 8)
        if width is None:
            width = max(8, round(height * scene.width / scene.height / 8) * 8)
        height, width = _check_canvas(height, width, max_side, 8)
        for i, layer in enumerate(scene.layers):
            layer.mask = _resize_nearest(layer.mask, height, width)
            if not layer.mask.any():
                raise SemanticDrawError(f"{_label(layer.name, i + 1)} vanishes when the canvas is scaled to "
                                        f"{width}x{height}: its mask is too thin. Use a larger size or a bigger mask.")
        if scene.background.image is not None:
            scene.background.image = scene.background.image.resize((width, height), Image.LANCZOS)
        return replace(scene, height=height, width=width).validate(max_side=max_side)

    def preview(self, opacity: float | None = None) -> Image.Image:
        """An RGB picture of the palette: each brush in its colour over white (or over the background image)."""
        scene = self.validate()
        bg = scene.background.image
        canvas = np.full((scene.height, scene.width, 3), 255.0) if bg is None else np.asarray(bg, np.float64)
        opacity = (0.8 if bg is None else 0.5) if opacity is None else float(opacity)
        for layer, color in zip(scene.layers, palette_colors(len(scene.layers))):
            canvas[layer.mask] = (1 - opacity) * canvas[layer.mask] + opacity * np.array(color, np.float64)
        return Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8), "RGB")

    # ---- palette files ----

    def to_dict(self) -> dict:
        """The scene as in scene.json: JSON-able, masks named `mask_<i>.png`, background image `background.png`."""
        d = {k: v for k, v in copy.deepcopy(self.extra).items() if k not in _KNOWN_KEYS}
        background = self.background if self.background is not None else Background()
        return {
            "format": PALETTE_FORMAT, "name": self.name, "height": self.height, "width": self.width,
            "negative_prompt": self.negative_prompt,
            "background": {"prompt": background.prompt, "negative_prompt": background.negative_prompt,
                           "image": None if background.image is None else "background.png"},
            "layers": [{"name": layer.name or f"Brush {i}", "prompt": layer.prompt,
                        "negative_prompt": layer.negative_prompt,
                        "mask": None if layer.mask is None else f"mask_{i}.png",
                        "mask_strength": layer.mask_strength, "mask_blur": layer.mask_blur,
                        "prompt_strength": layer.prompt_strength}
                       for i, layer in enumerate(self.layers, start=1)],
            **d,
        }

    @classmethod
    def from_dict(cls, d: dict, base: str | os.PathLike | None = None) -> Scene:
        """A scene (not yet validated) from a scene.json dict. With `base` (a palette folder), mask and background
        file names are read from inside it; without, they stay as they are (paths, arrays or images)."""
        files = None if base is None else _FolderFiles(Path(base))
        return _scene_from_dict(d, files)

    @classmethod
    def load(cls, path: str | os.PathLike, max_side: int = MAX_SIDE) -> Scene:
        """Read a palette (folder, .zip, or a scene.json file) and return the validated scene."""
        path = Path(path)
        try:
            if not path.exists():
                raise SemanticDrawError("there is no such file or folder.")
            if path.is_dir():
                return _load_from(_FolderFiles(path), max_side)
            if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
                with _ZipFiles(path) as files:
                    return _load_from(files, max_side)
            if path.suffix.lower() == ".json":
                return _load_from(_FolderFiles(path.parent, path.name), max_side)
            raise SemanticDrawError("a palette is a folder or a .zip file holding scene.json.")
        except SemanticDrawError as e:
            raise SemanticDrawError(f"Cannot load palette {str(path)!r}: {e}") from None

    def save(self, path: str | os.PathLike, max_side: int = MAX_SIDE) -> None:
        """Write a palette: a folder, or a .zip if `path` ends with .zip. The scene is validated first."""
        scene = self.validate(max_side=max_side)
        d = scene.to_dict()
        try:
            text = json.dumps(d, indent=2, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise SemanticDrawError(f"The scene's extra fields cannot be written as JSON: {e}.") from None
        files = {"scene.json": text.encode("utf-8")}
        for spec, layer, color in zip(d["layers"], scene.layers, palette_colors(len(scene.layers))):
            files[spec["mask"]] = _mask_png(layer.mask, color)
        if scene.background.image is not None:
            files["background.png"] = _png_bytes(scene.background.image)
        path = Path(path)
        if path.suffix.lower() == ".zip":
            _write_zip(path, files)
        else:
            _write_folder(path, files)


# ---------------------------------------------------------------- validation

def _label(name: Any, i: int) -> str:
    """How messages name brush i: 'Brush 3' or 'Brush 3 ("sun")'."""
    if isinstance(name, str) and name.strip() and name != f"Brush {i}":
        return f'Brush {i} ("{name}")'
    return f"Brush {i}"


def _check_canvas(height: Any, width: Any, max_side: int, multiple: int) -> tuple[int, int]:
    sides = []
    for what, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise SemanticDrawError(f"The canvas {what} must be a whole number of pixels, got {value!r}.")
        value = int(value)
        if value <= 0:
            raise SemanticDrawError(f"The canvas {what} must be positive, got {value}.")
        if value % multiple:
            near = max(multiple, round(value / multiple) * multiple)
            raise SemanticDrawError(f"The canvas {what} must be a multiple of {multiple}, got {value}; try {near}.")
        if value > max_side:
            raise SemanticDrawError(f"The canvas {what} {value} is larger than the maximum of {max_side} pixels.")
        sides.append(value)
    return sides[0], sides[1]


def _check_text(value: Any, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise SemanticDrawError(f"{what} must be text, got {type(value).__name__}.")
    return value


def _check_number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SemanticDrawError(f"{what} must be a number, got {value!r}.")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        span = f"a finite number of at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise SemanticDrawError(f"{what} must be {span}, got {value:g}.")
    return value


def _validate_layer(layer: Any, i: int, height: int, width: int, scene_negative: str) -> Layer:
    label = _label(getattr(layer, "name", None), i)
    if not isinstance(layer, Layer):
        raise SemanticDrawError(f"{label} must be a Layer, got {type(layer).__name__}.")
    prompt = _check_text(layer.prompt, f"{label}: the prompt")
    if not prompt.strip():
        raise SemanticDrawError(f"{label} has no prompt: write what to draw in this region.")
    negative = _check_text(layer.negative_prompt, f"{label}: the negative_prompt", optional=True)
    name = _check_text(layer.name, f"{label}: the name").strip() or f"Brush {i}"
    if layer.mask is None:
        raise SemanticDrawError(f"{label} has no mask: paint its region.")
    mask = normalize_mask(layer.mask, height, width, f"{label}: the mask")
    if not mask.any():
        raise SemanticDrawError(f"{label}: the mask is empty (nothing painted). Paint its region or remove the brush.")
    return Layer(
        prompt=prompt, mask=mask, name=name,
        negative_prompt=scene_negative if negative is None else negative,
        mask_strength=_check_number(layer.mask_strength, f"{label}: mask_strength", 0.0, 1.0),
        mask_blur=_check_number(layer.mask_blur, f"{label}: mask_blur", 0.0, math.inf),
        prompt_strength=_check_number(layer.prompt_strength, f"{label}: prompt_strength", 0.0, 1.0),
    )


def _validate_background(background: Any, height: int, width: int, scene_negative: str) -> Background:
    if background is None:
        background = Background()
    elif isinstance(background, str):
        background = Background(prompt=background)
    elif not isinstance(background, Background):
        raise SemanticDrawError(f"The background must be a Background, got {type(background).__name__}.")
    prompt = _check_text(background.prompt, "The background prompt")
    negative = _check_text(background.negative_prompt, "The background negative_prompt", optional=True)
    image = None
    if background.image is not None:
        image = normalize_image(background.image, height, width, "The background image")
    return Background(prompt, scene_negative if negative is None else negative, image)


def _fit_size(size_hw: tuple[int, int], height: int, width: int, what: str) -> bool:
    """True when an image of `size_hw` must be resized to the canvas; raises when its aspect ratio differs."""
    h, w = size_hw
    if (h, w) == (height, width):
        return False
    if h == 0 or w == 0 or abs((h / w) / (height / width) - 1) > ASPECT_TOLERANCE:
        raise SemanticDrawError(f"{what} is {w}x{h} pixels but the canvas is {width}x{height}: the aspect ratios "
                                "differ. Use an image of the canvas size (or the same shape).")
    return True


def _resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def _open_image(source: Any, what: str) -> Image.Image:
    """Decode an image file (path or bytes) completely, refusing non-images, corrupt and oversized files."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            if max(image.size) > MAX_IMAGE_SIDE:
                raise SemanticDrawError(f"{what} is {image.width}x{image.height} pixels, larger than "
                                        f"{MAX_IMAGE_SIDE} on a side.")
            image.load()
        return image
    except FileNotFoundError:
        raise SemanticDrawError(f"{what}: the file {str(source)!r} does not exist.") from None
    except IsADirectoryError:
        raise SemanticDrawError(f"{what}: {str(source)!r} is a folder, not an image file.") from None
    except Image.DecompressionBombError:
        raise SemanticDrawError(f"{what} is too large to open.") from None
    except Image.UnidentifiedImageError:
        raise SemanticDrawError(f"{what} is not an image file (PNG, JPEG, WebP...).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise SemanticDrawError(f"{what} is a damaged image file ({e}).") from None


def _as_image_or_array(value: Any, what: str) -> Image.Image | np.ndarray:
    if isinstance(value, (str, os.PathLike)):
        return _open_image(value, what)
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError, RuntimeError) as e:  # e.g. a tensor on a GPU
            raise SemanticDrawError(f"{what} cannot be read as an array ({e}).") from None
        if array.dtype.kind not in "biuf":
            raise SemanticDrawError(f"{what} must hold numbers, got an array of {array.dtype}.")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise SemanticDrawError(f"{what} holds NaN or infinite values.")
        return array
    raise SemanticDrawError(f"{what} must be an image, a numpy array or an image file path, "
                            f"got {type(value).__name__}.")


def normalize_mask(mask: Any, height: int, width: int, what: str = "The mask") -> np.ndarray:
    """A bool [height, width] array, True where painted: alpha > 0 for images with alpha (and arrays with 2 or 4
    channels), any channel > 0 otherwise. Masks of the canvas aspect ratio are nearest-resized."""
    source = _as_image_or_array(mask, what)
    if isinstance(source, Image.Image):
        bands = source.getbands()
        if "A" in bands or "a" in bands:
            array = np.asarray(source.getchannel("A" if "A" in bands else "a"))
        elif source.mode == "P":
            array = np.asarray(source.convert("RGBA" if "transparency" in source.info else "RGB"))
            array = array[..., 3] if array.shape[2] == 4 else array
        elif len(bands) == 1:
            array = np.asarray(source)
        else:
            array = np.asarray(source.convert("RGB"))
    else:
        array = source
    if array.ndim == 3 and array.shape[2] in (2, 4):
        array = array[..., -1]  # alpha
    elif array.ndim == 3 and array.shape[2] in (1, 3):
        array = array.max(axis=2)
    if array.ndim != 2:
        raise SemanticDrawError(f"{what} must be a [height, width] array or an image, got shape {array.shape}.")
    painted = array > 0
    if _fit_size(painted.shape, height, width, what):
        painted = _resize_nearest(painted, height, width)
    return np.array(painted, dtype=bool)  # always a fresh array


def normalize_image(image: Any, height: int, width: int, what: str = "The image") -> Image.Image:
    """A PIL RGB image of exactly the canvas size. Transparent pixels become white; an image of the canvas aspect
    ratio is Lanczos-resized; numpy input is uint8 or float in [0, 1], [H, W] or [H, W, 3 or 4]."""
    source = _as_image_or_array(image, what)
    if isinstance(source, np.ndarray):
        source = _array_to_image(source, what)
    if "A" in source.getbands() or (source.mode == "P" and "transparency" in source.info):
        white = Image.new("RGBA", source.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, source.convert("RGBA")).convert("RGB")
    else:
        rgb = source.convert("RGB")
    if _fit_size((rgb.height, rgb.width), height, width, what):
        rgb = rgb.resize((width, height), Image.LANCZOS)
    return rgb  # convert() and resize() return new images: the caller's image is never shared


def _array_to_image(array: np.ndarray, what: str) -> Image.Image:
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise SemanticDrawError(f"{what} must be a [height, width, 3] RGB array, got shape {array.shape}.")
    if array.dtype.kind == "b":
        raise SemanticDrawError(f"{what} must be an RGB image, not a bool mask.")
    if array.dtype.kind == "f":
        if array.size and (array.min() < 0 or array.max() > 1):
            raise SemanticDrawError(f"{what}: float pixel values must lie in [0, 1].")
        array = np.round(array * 255)
    elif array.size and (array.min() < 0 or array.max() > 255):
        raise SemanticDrawError(f"{what}: integer pixel values must lie in [0, 255].")
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))


# ---------------------------------------------------------------- palette files

def _safe_name(name: Any, what: str) -> str:
    """A relative file name inside the palette; refuses absolute paths and '..'."""
    if not isinstance(name, str) or not name.strip():
        raise SemanticDrawError(f"{what} must be a file name, got {name!r}.")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in posix.split("/"):
        raise SemanticDrawError(f"{what} {name!r} points outside the palette; use a file inside it.")
    return posixpath.normpath(posix)


class _FolderFiles:
    def __init__(self, root: Path, scene_file: str = "scene.json"):
        self.root, self.scene_file = root, scene_file

    def scene_json(self) -> bytes:
        try:
            return (self.root / self.scene_file).read_bytes()
        except FileNotFoundError:
            raise SemanticDrawError(f"the folder has no {self.scene_file}.") from None

    def image(self, name: str, what: str) -> Image.Image:
        path = (self.root / _safe_name(name, what)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise SemanticDrawError(f"{what} {name!r} points outside the palette; use a file inside it.")
        if not path.exists():
            raise SemanticDrawError(f"{what}: the file {name!r} is missing from the palette.")
        return _open_image(path, what)


class _ZipFiles:
    """Reads a palette .zip: scene.json at the top or inside one top-level folder; at most MAX_PALETTE_BYTES."""

    def __init__(self, path: Path):
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise SemanticDrawError(f"the .zip file is damaged ({e}).") from None
        infos = self.zip.infolist()
        if sum(info.file_size for info in infos) > MAX_PALETTE_BYTES:
            self.zip.close()
            raise SemanticDrawError(f"the .zip unpacks to more than {MAX_PALETTE_BYTES >> 20} MiB.")
        names = {info.filename for info in infos}
        tops = [n for n in names if n.count("/") == 1 and n.endswith("/scene.json")]
        if "scene.json" in names:
            self.prefix = ""
        elif len(tops) == 1:
            self.prefix = tops[0][: -len("scene.json")]
        else:
            self.zip.close()
            raise SemanticDrawError("the .zip holds no scene.json (at the top or in one top-level folder).")
        self.names = names

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def _read(self, name: str) -> bytes:
        # zipfile never returns more than the size declared in the directory (it checks the CRC), so the total
        # checked in __init__ bounds what we unpack.
        try:
            return self.zip.read(self.prefix + name)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as e:
            raise SemanticDrawError(f"{name!r} inside the .zip is damaged or unreadable ({e}).") from None

    def scene_json(self) -> bytes:
        return self._read("scene.json")

    def image(self, name: str, what: str) -> Image.Image:
        name = _safe_name(name, what)
        if self.prefix + name not in self.names:
            raise SemanticDrawError(f"{what}: the file {name!r} is missing from the palette.")
        return _open_image(self._read(name), what)


def _load_from(files: _FolderFiles | _ZipFiles, max_side: int) -> Scene:
    try:
        d = json.loads(files.scene_json().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SemanticDrawError(f"scene.json is not valid JSON ({e}).") from None
    return _scene_from_dict(d, files).validate(max_side=max_side)


def _scene_from_dict(d: Any, files: _FolderFiles | _ZipFiles | None) -> Scene:
    if not isinstance(d, dict):
        raise SemanticDrawError(f"scene.json must hold a JSON object, got {type(d).__name__}.")
    fmt = d.get("format", PALETTE_FORMAT)
    if fmt != PALETTE_FORMAT:
        raise SemanticDrawError(f"unknown palette format {fmt!r}; this version reads {PALETTE_FORMAT!r}.")
    for key in ("height", "width"):
        if key not in d:
            raise SemanticDrawError(f"scene.json has no {key!r}.")
    layers = d.get("layers", [])
    if not isinstance(layers, list):
        raise SemanticDrawError(f"'layers' must be a list, got {type(layers).__name__}.")
    background = d.get("background") or {}
    if not isinstance(background, dict):
        raise SemanticDrawError(f"'background' must be an object, got {type(background).__name__}.")

    def picture(value: Any, what: str) -> Any:
        return files.image(value, what) if files is not None and value is not None else value

    defaults, scene_layers = Layer(prompt=""), []
    for i, spec in enumerate(layers, start=1):
        if not isinstance(spec, dict):
            raise SemanticDrawError(f"Brush {i} must be an object, got {type(spec).__name__}.")
        label = _label(spec.get("name"), i)
        scene_layers.append(Layer(
            prompt=spec.get("prompt", ""), mask=picture(spec.get("mask"), f"{label}: the mask"),
            name=spec.get("name", ""), negative_prompt=spec.get("negative_prompt"),
            mask_strength=spec.get("mask_strength", defaults.mask_strength),
            mask_blur=spec.get("mask_blur", defaults.mask_blur),
            prompt_strength=spec.get("prompt_strength", defaults.prompt_strength)))
    return Scene(
        height=d["height"], width=d["width"], layers=scene_layers,
        background=Background(prompt=background.get("prompt", ""),
                              negative_prompt=background.get("negative_prompt"),
                              image=picture(background.get("image"), "The background image")),
        negative_prompt=d.get("negative_prompt", ""), name=d.get("name", ""),
        extra={k: v for k, v in d.items() if k not in _KNOWN_KEYS})


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _mask_png(mask: np.ndarray, color: tuple[int, int, int]) -> bytes:
    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[mask] = color + (255,)
    return _png_bytes(Image.fromarray(rgba, "RGBA"))


def _write_zip(path: Path, files: dict[str, bytes]) -> None:
    if path.is_dir():
        raise SemanticDrawError(f"Cannot save palette: {str(path)!r} is a folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".zip.tmp")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in files.items():
                z.writestr(name, data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _write_folder(path: Path, files: dict[str, bytes]) -> None:
    if path.exists() and not path.is_dir():
        raise SemanticDrawError(f"Cannot save palette: {str(path)!r} is a file, not a folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / "scene.json").exists():
        raise SemanticDrawError(f"Cannot save palette: the folder {str(path)!r} is not empty and holds no palette; "
                                "choose a new or empty folder.")
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name != "scene.json":
            (path / name).write_bytes(data)
    (path / "scene.json").write_bytes(files["scene.json"])
