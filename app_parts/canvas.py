"""The painting canvas <-> brush masks: what the gr.ImageEditor sends and what it is sent.

The editor holds one layer per brush, in brush order; a layer's alpha channel is the brush's mask. Its background is a
plain white canvas, or a picture the user uploaded (editing / inpainting): a white background means "no image".
Pure numpy / PIL, no Gradio and no model here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

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
    """One editor layer: the brush colour where painted, transparent elsewhere."""
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., :3] = color
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != (height, width):
            m = np.asarray(Image.fromarray((m > 0).astype(np.uint8) * 255).resize((width, height), Image.NEAREST))
        rgba[..., 3] = np.where(m > 0, 255, 0).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def editor_value(height: int, width: int, masks: list, colors: list[tuple[int, int, int]],
                 background: Image.Image | None = None) -> dict:
    """A value for the editor: the background (or white) and one coloured layer per brush mask (None: blank)."""
    bg = white(height, width) if background is None else background.convert("RGB").resize((width, height))
    layers = [layer_image(m, c, height, width) for m, c in zip(masks, colors)]
    return {"background": bg, "layers": layers, "composite": None}
