"""Scenes as plain data: a canvas, a background and semantic brushes (prompt + painted mask), and their checks.

`Scene.validate()` turns what a user or the app hands in into a normalized scene (bool masks at canvas size,
resolved negative prompts, checked numbers) or raises one `SceneError` that names the bad field (`ResourceError` for
a canvas or an image file beyond the limits). Image files are decoded here (`_open_image`), for masks given as paths
and for palette files alike. `Scene.save` / `Scene.load` / `to_dict` / `from_dict` hand over to palette.py, which
reads and writes palette files. No torch, diffusers or gradio here.
"""

from __future__ import annotations

import colorsys
import copy
import io
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from .errors import ResourceError, SceneError, SemanticDrawError
from .sizes import keep_aspect, to_multiple

MAX_SIDE = 8192                      # largest canvas side accepted by validate() unless max_side= says otherwise
MAX_IMAGE_SIDE = 16384               # largest side of an image file we agree to decode (masks, backgrounds)
ASPECT_TOLERANCE = 0.01              # masks / images within 1 % of the canvas aspect ratio are resized, not refused


def __getattr__(name: str) -> Any:
    """`PALETTE_FORMAT` lives in palette.py (which imports this module); it is still importable from here."""
    if name == "PALETTE_FORMAT":
        from .palette import PALETTE_FORMAT
        return PALETTE_FORMAT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        """A new normalized scene, or one SceneError naming the bad field (ResourceError for a side above
        `max_side`). Does not change `self`."""
        height, width = _check_canvas(self.height, self.width, max_side, multiple)
        negative = _check_text(self.negative_prompt, "The scene's negative_prompt")
        name = _check_text(self.name, "The scene's name")
        if not isinstance(self.extra, dict):
            raise SceneError(f"The scene's extra must be a dict, got {type(self.extra).__name__}.")
        if not isinstance(self.layers, (list, tuple)):
            raise SceneError(f"The scene's layers must be a list of Layer, got {type(self.layers).__name__}.")
        layers = [_validate_layer(layer, i + 1, height, width, negative) for i, layer in enumerate(self.layers)]
        background = _validate_background(self.background, height, width, negative)
        if not layers and not background.prompt.strip() and background.image is None:
            raise SceneError("Nothing to draw: add a brush or a background prompt.")
        return Scene(height, width, layers, background, negative, name, copy.deepcopy(self.extra))

    def resized(self, height: int | None = None, width: int | None = None, *, max_side: int = MAX_SIDE) -> Scene:
        """A validated copy at a new canvas size: masks nearest-resized, background image Lanczos-resized.
        Give one side to keep the aspect ratio (the other is rounded to a multiple of 8); give both to stretch."""
        scene = self.validate(max_side=max_side)
        if height is None and width is None:
            raise SceneError("resized() needs a height, a width or both.")
        height, width = keep_aspect(height, width, (scene.height, scene.width), 8)
        height, width = _check_canvas(height, width, max_side, 8)
        for i, layer in enumerate(scene.layers):
            layer.mask = _resize_nearest(layer.mask, height, width)
            if not layer.mask.any():
                raise SceneError(f"{_label(layer.name, i + 1)} vanishes when the canvas is scaled to "
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

    # ---- palette files (palette.py) ----

    def to_dict(self) -> dict:
        """The scene as in scene.json: JSON-able, masks named `mask_<i>.png`, background image `background.png`."""
        from . import palette
        return palette.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict, base: str | os.PathLike | None = None) -> Scene:
        """A scene (not yet validated) from a scene.json dict. With `base` (a palette folder), mask and background
        file names are read from inside it; without, they stay as they are (paths, arrays or images)."""
        from . import palette
        return palette.from_dict(d, base)

    @classmethod
    def load(cls, path: str | os.PathLike, max_side: int = MAX_SIDE) -> Scene:
        """Read a palette (folder, .zip, or a scene.json file) and return the validated scene."""
        from . import palette
        return palette.load(path, max_side)

    def save(self, path: str | os.PathLike, max_side: int = MAX_SIDE) -> None:
        """Write a palette: a folder, or a .zip if `path` ends with .zip. The scene is validated first."""
        from . import palette
        palette.save(self, path, max_side)


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
            raise SceneError(f"The canvas {what} must be a whole number of pixels, got {value!r}.")
        value = int(value)
        if value <= 0:
            raise SceneError(f"The canvas {what} must be positive, got {value}.")
        if value % multiple:
            near = to_multiple(value, multiple)
            raise SceneError(f"The canvas {what} must be a multiple of {multiple}, got {value}; try {near}.")
        if value > max_side:
            raise ResourceError(f"The canvas {what} {value} is larger than the maximum of {max_side} pixels.")
        sides.append(value)
    return sides[0], sides[1]


def _check_text(value: Any, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise SceneError(f"{what} must be text, got {type(value).__name__}.")
    return value


def _check_number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SceneError(f"{what} must be a number, got {value!r}.")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        span = f"a finite number of at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise SceneError(f"{what} must be {span}, got {value:g}.")
    return value


def _validate_layer(layer: Any, i: int, height: int, width: int, scene_negative: str) -> Layer:
    label = _label(getattr(layer, "name", None), i)
    if not isinstance(layer, Layer):
        raise SceneError(f"{label} must be a Layer, got {type(layer).__name__}.")
    prompt = _check_text(layer.prompt, f"{label}: the prompt")
    if not prompt.strip():
        raise SceneError(f"{label} has no prompt: write what to draw in this region.")
    negative = _check_text(layer.negative_prompt, f"{label}: the negative_prompt", optional=True)
    name = _check_text(layer.name, f"{label}: the name").strip() or f"Brush {i}"
    if layer.mask is None:
        raise SceneError(f"{label} has no mask: paint its region.")
    mask = normalize_mask(layer.mask, height, width, f"{label}: the mask")
    if not mask.any():
        raise SceneError(f"{label}: the mask is empty (nothing painted). Paint its region or remove the brush.")
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
        raise SceneError(f"The background must be a Background, got {type(background).__name__}.")
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
        raise SceneError(f"{what} is {w}x{h} pixels but the canvas is {width}x{height}: the aspect ratios "
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
                raise ResourceError(f"{what} is {image.width}x{image.height} pixels, larger than "
                                    f"{MAX_IMAGE_SIDE} on a side.")
            image.load()
        return image
    except SemanticDrawError:  # the size check above: a ValueError, not a damaged file
        raise
    except FileNotFoundError:
        raise SceneError(f"{what}: the file {str(source)!r} does not exist.") from None
    except IsADirectoryError:
        raise SceneError(f"{what}: {str(source)!r} is a folder, not an image file.") from None
    except Image.DecompressionBombError:
        raise ResourceError(f"{what} is too large to open.") from None
    except Image.UnidentifiedImageError:
        raise SceneError(f"{what} is not an image file (PNG, JPEG, WebP...).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise SceneError(f"{what} is a damaged image file ({e}).") from None


def _as_image_or_array(value: Any, what: str) -> Image.Image | np.ndarray:
    if isinstance(value, (str, os.PathLike)):
        return _open_image(value, what)
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError, RuntimeError) as e:  # e.g. a tensor on a GPU
            raise SceneError(f"{what} cannot be read as an array ({e}).") from None
        if array.dtype.kind not in "biuf":
            raise SceneError(f"{what} must hold numbers, got an array of {array.dtype}.")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise SceneError(f"{what} holds NaN or infinite values.")
        return array
    raise SceneError(f"{what} must be an image, a numpy array or an image file path, "
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
        raise SceneError(f"{what} must be a [height, width] array or an image, got shape {array.shape}.")
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
        raise SceneError(f"{what} must be a [height, width, 3] RGB array, got shape {array.shape}.")
    if array.dtype.kind == "b":
        raise SceneError(f"{what} must be an RGB image, not a bool mask.")
    if array.dtype.kind == "f":
        if array.size and (array.min() < 0 or array.max() > 1):
            raise SceneError(f"{what}: float pixel values must lie in [0, 1].")
        array = np.round(array * 255)
    elif array.size and (array.min() < 0 or array.max() > 255):
        raise SceneError(f"{what}: integer pixel values must lie in [0, 255].")
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
