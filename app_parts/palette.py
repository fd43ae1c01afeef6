"""The semantic palette as the page holds it (brush rows of plain values) <-> semantic_draw Scene.

A brush row is what the user typed: name, prompt, negative prompt, mask alpha, mask blur, prompt strength. Its mask
lives in the editor layer of the same index; the opacity it was painted with there scales its mask alpha (a brush
painted at 50 % opacity with mask alpha 1 draws at mask strength 0.5, as the palette file then says). Building a
scene skips brushes that are still blank and reports half-finished ones, so the stream keeps running while someone
paints and types.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from semantic_draw import Background, Layer, Scene, SemanticDrawError

from .canvas import Canvas, fit_canvas, painted_opacity


@dataclass
class Brush:
    name: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    mask_strength: float = 1.0
    mask_blur: float = 8.0
    prompt_strength: float = 1.0


BRUSH_FIELDS = tuple(f.name for f in fields(Brush))
N_FIELDS = len(BRUSH_FIELDS)

STARTER = [
    Brush("Brush 1", "a tall green tree"),
    Brush("Brush 2", "a small red house"),
    Brush("Brush 3", "a calm blue lake"),
]
STARTER_BACKGROUND = "a sunny meadow under a clear blue sky"
STARTER_NEGATIVE = "worst quality, bad quality, blurry"


def default_name(i: int) -> str:
    return f"Brush {i + 1}"


def brushes_from_rows(count: int, rows: list) -> list[Brush]:
    """The first `count` brush rows (flat list of N_FIELDS values per row) -> Brush objects."""
    count = int(count or 0)
    out = []
    for i in range(count):
        values = rows[i * N_FIELDS:(i + 1) * N_FIELDS]
        b = Brush(*values) if len(values) == N_FIELDS else Brush()
        b.name = (b.name or "").strip() or default_name(i)
        b.prompt = b.prompt or ""
        b.negative_prompt = b.negative_prompt or ""
        b.mask_strength = float(1.0 if b.mask_strength is None else b.mask_strength)
        b.mask_blur = float(8.0 if b.mask_blur is None else b.mask_blur)
        b.prompt_strength = float(1.0 if b.prompt_strength is None else b.prompt_strength)
        out.append(b)
    return out


def rows_from_brushes(brushes: list[Brush], max_brushes: int) -> list:
    """Flat row values for all `max_brushes` rows (blank rows past the last brush)."""
    out = []
    for i in range(max_brushes):
        b = brushes[i] if i < len(brushes) else Brush(default_name(i))
        out.extend(getattr(b, f) for f in BRUSH_FIELDS)
    return out


def build_scene(brushes: list[Brush], canvas: Canvas, background_prompt: str, negative_prompt: str, *,
                multiple: int, strict: bool) -> tuple[Scene, list[str]]:
    """The scene to draw and notes for the user about brushes left out.

    A brush with neither prompt nor paint is an unused slot (left out silently); one with a prompt but nothing
    painted is left out with a note. A painted brush without a prompt is an error when `strict` (one-shot, the user
    asked for this scene) and left out with a note otherwise (the stream keeps going while the user types).
    """
    canvas = fit_canvas(canvas, multiple)
    layers, notes = [], []
    for i, b in enumerate(brushes):
        painted = canvas.painted(i)
        has_prompt = bool(b.prompt.strip())
        if not painted and not has_prompt:
            continue
        if not painted:
            notes.append(f"{b.name} is not painted yet: select its layer in the canvas and paint, or clear its "
                         "prompt. It was left out.")
            continue
        if not has_prompt and not strict:
            notes.append(f"{b.name} is painted but has no prompt; it was left out.")
            continue
        # the opacity it was painted with in the editor scales the brush's mask strength
        strength = round(b.mask_strength * painted_opacity(canvas.masks[i]), 4)
        layers.append(Layer(prompt=b.prompt, mask=canvas.masks[i] > 0, name=b.name,
                            negative_prompt=b.negative_prompt.strip() or None,
                            mask_strength=strength, mask_blur=b.mask_blur,
                            prompt_strength=b.prompt_strength))
    scene = Scene(canvas.height, canvas.width, layers=layers,
                  background=Background(prompt=background_prompt or "", image=canvas.background),
                  negative_prompt=negative_prompt or "")
    if not layers and not (background_prompt or "").strip() and canvas.background is None:
        raise SemanticDrawError("Nothing to draw yet: paint with a brush (select its layer in the canvas) and give "
                                "it a prompt, or write a background prompt.")
    if not layers and canvas.background is not None:
        raise SemanticDrawError("Nothing to change on the photo yet: paint the regions to redraw with a brush "
                                "(select its layer in the canvas) and give it a prompt. The rest of the photo stays "
                                "as it is; “Remove photo” draws a new picture instead.")
    return scene, notes


def brushes_from_scene(scene: Scene) -> list[Brush]:
    out = []
    for i, layer in enumerate(scene.layers):
        neg = layer.negative_prompt or ""
        if neg == (scene.negative_prompt or ""):
            neg = ""  # same as the scene's: show it once, in the scene negative prompt
        out.append(Brush(layer.name or default_name(i), layer.prompt, neg, float(layer.mask_strength),
                         float(layer.mask_blur), float(layer.prompt_strength)))
    return out


def scene_masks(scene: Scene) -> list[np.ndarray]:
    return [np.asarray(layer.mask) for layer in scene.layers]
