"""The painting canvas <-> brush masks: what the gr.ImageEditor sends and what it is sent.

The editor holds one layer per brush, in brush order; a layer's alpha channel is the brush's mask. Its background is a
plain white canvas, or a picture the user uploaded (editing / inpainting): a white background means "no image".
Pure numpy / PIL, no Gradio and no model here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from semantic_draw import ResourceError, SceneError
from semantic_draw.sizes import fit

WHITE_LEVEL = 250  # a background whose every pixel is at least this bright counts as the blank white canvas


@dataclass
class Canvas:
    """What the user painted: canvas size, one uint8 alpha mask per editor layer, an optional background picture."""
    height: int
    width: int
    masks: list[np.ndarray]          # [H, W] uint8, > 0 painted; index i belongs to brush i
    background: Image.Image | None   # RGB at canvas size, or None for the plain white canvas

    def painted(self, i: int) -> bool:
        return i < len(self.masks) and bool(self.masks[i].any())


def white(height: int, width: int) -> Image.Image:
    return Image.new("RGB", (int(width), int(height)), (255, 255, 255))


def _rgba(array) -> np.ndarray | None:
    if array is None:
        return None
    if isinstance(array, Image.Image):
        array = np.asarray(array.convert("RGBA"))
    array = np.asarray(array)
    if array.ndim == 2:
        return np.dstack([array, array, array, np.full_like(array, 255)])
    if array.shape[2] == 3:
        return np.dstack([array, np.full(array.shape[:2], 255, array.dtype)])
    return array


def _flatten(rgba: np.ndarray) -> Image.Image:
    """RGBA -> RGB over white."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8), "RGB")


def read_editor(value: dict | None, default_size: tuple[int, int]) -> Canvas:
    """The editor's value (type="numpy", RGBA) -> Canvas. An untouched editor sends no images: an empty canvas."""
    value = value or {}
    background = _rgba(value.get("background"))
    layers = [_rgba(layer) for layer in (value.get("layers") or []) if layer is not None]
    if background is not None:
        height, width = background.shape[:2]
    elif layers:
        height, width = layers[0].shape[:2]
    else:
        height, width = default_size
    masks = []
    for layer in layers:
        alpha = layer[..., 3]
        if alpha.shape != (height, width):  # a layer of another size (should not happen): fit it to the canvas
            alpha = np.asarray(Image.fromarray(alpha).resize((width, height), Image.NEAREST))
        masks.append(alpha.astype(np.uint8))
    image = None
    if background is not None:
        flat = _flatten(background)
        if np.asarray(flat).min() < WHITE_LEVEL:
            image = flat
    return Canvas(height, width, masks, image)


def fit_canvas(canvas: Canvas, multiple: int) -> Canvas:
    """Round the canvas down to sides that are multiples of `multiple` (what the model needs), resizing the masks
    (nearest) and the background (Lanczos). A canvas that already fits is returned as is."""
    h, w = fit(canvas.height, canvas.width, multiple)
    if (h, w) == (canvas.height, canvas.width):
        return canvas
    return resize_canvas(canvas, h, w)


def resize_canvas(canvas: Canvas, h: int, w: int) -> Canvas:
    """The same painting on a canvas of h x w pixels (masks nearest, background Lanczos)."""
    masks = [np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST)) for m in canvas.masks]
    bg = None if canvas.background is None else canvas.background.resize((w, h), Image.LANCZOS)
    return Canvas(h, w, masks, bg)


def layer_image(mask: np.ndarray | None, color: tuple[int, int, int], height: int, width: int) -> Image.Image:
    """One editor layer: the brush colour where painted, transparent elsewhere. A uint8 mask keeps its alpha (the
    opacity it was painted with); a bool mask is opaque where True."""
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., :3] = color
    if mask is not None:
        m = np.asarray(mask)
        m = m.astype(np.uint8) * 255 if m.dtype == bool else np.clip(m, 0, 255).astype(np.uint8)
        if m.shape != (height, width):
            m = np.asarray(Image.fromarray(m).resize((width, height), Image.NEAREST))
        rgba[..., 3] = m
    return Image.fromarray(rgba, "RGBA")


def editor_value(height: int, width: int, masks: list, colors: list[tuple[int, int, int]],
                 background: Image.Image | None = None) -> dict:
    """A value for the editor: the background (or white) and one coloured layer per brush mask (None: blank)."""
    bg = white(height, width) if background is None else background.convert("RGB").resize((width, height))
    layers = [layer_image(m, c, height, width) for m, c in zip(masks, colors)]
    return {"background": bg, "layers": layers, "composite": None}


def painted_opacity(mask: np.ndarray) -> float:
    """The opacity a layer was painted with (the median alpha of its painted pixels, to 0.05): a brush painted at
    50 % opacity in the editor draws at half its mask strength. 1.0 for a blank layer."""
    alpha = np.asarray(mask)
    painted = alpha[alpha > 0]
    if painted.size == 0:
        return 1.0
    return max(0.05, round(float(np.median(painted)) / 255 * 20) / 20)


MASK_FILE_BYTES = 32 * 2**20
MASK_FILE_PIXELS = 64 * 2**20


def mask_from_image(path, height: int, width: int) -> tuple[np.ndarray, str | None]:
    """An uploaded mask image -> a uint8 mask (255 painted) at the canvas size, and a note when it was stretched.

    Alpha images: painted where alpha is at least half; black-and-white (or grey) images: painted where light (at
    least half). Raises SceneError for a file that is not an image, a blank or full mask."""
    name = os.path.basename(str(path))
    if os.path.getsize(path) > MASK_FILE_BYTES:
        raise ResourceError(f"The mask file “{name}” is larger than {MASK_FILE_BYTES // 2**20} MB.")
    try:
        with Image.open(path) as image:
            if image.width * image.height > MASK_FILE_PIXELS:
                raise ResourceError(f"The mask “{name}” is {image.width}x{image.height} pixels: too large.")
            image.load()
            if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
                rgba = np.asarray(image.convert("RGBA"))
                alpha = rgba[..., 3]
                values = alpha if alpha.min() < 255 else np.asarray(image.convert("L"))
            else:
                values = np.asarray(image.convert("L"))
    except (ResourceError, SceneError):
        raise
    except Exception:
        raise SceneError(f"“{name}” is not an image file (PNG, JPEG, WebP...): upload a black-and-white image "
                         "(white = the brush) or one with transparency (opaque = the brush).") from None
    painted = values >= 128
    if not painted.any() or painted.all():
        raise SceneError(f"The mask “{name}” is all {'black or transparent' if not painted.any() else 'white'}: "
                         "a mask is white (or opaque) where the brush paints and black (or transparent) elsewhere.")
    note = None
    h, w = painted.shape
    if abs((h / w) / (height / width) - 1) > 0.02:
        note = f"The mask is {w}x{h} and the canvas {width}x{height}: the mask was stretched to the canvas."
    mask = np.asarray(Image.fromarray(painted.astype(np.uint8) * 255).resize((width, height), Image.NEAREST))
    return mask, note
