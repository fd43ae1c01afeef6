"""Scenes for tests. In a test module: `from scenes import rect_scene, fixture_scene`.

    rect_scene(64, 96, [("a red apple", (8, 8, 40, 40)), ("a blue cup", (16, 48, 56, 88), {"mask_blur": 0})],
               background_prompt="a wooden table")
    fixture_scene("irworobongdo", height=64)      # the 8-brush 1920x768 scene scaled to 160x64
    fixture_scene("timessquare-edit", 64, 64)     # with the background photo, resized

Both return validated scenes (bool masks of the canvas size, resolved negative prompts) and a new object per call,
so a test may change what it gets.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from semantic_draw.scene import Background, Layer, Scene

ASSETS = Path(__file__).resolve().parents[1] / "assets"
ASSET_NAMES = ("irworobongdo", "timessquare", "timessquare-edit")
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"  # the paper's originals, when present


def rect_mask(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """A bool [height, width] mask, True inside box = (top, left, bottom, right) (bottom/right exclusive)."""
    top, left, bottom, right = box
    mask = np.zeros((height, width), bool)
    mask[top:bottom, left:right] = True
    return mask


def rect_scene(height: int = 64, width: int = 64, rects=(("a red ball", (16, 16, 48, 48)),),
               background_prompt: str = "a plain white wall", negative_prompt: str = "", **layer_options) -> Scene:
    """A validated scene with one rectangular brush per entry of `rects`, bottom to top.

    Each entry is (prompt, (top, left, bottom, right)) or (prompt, box, {Layer field: value}). `layer_options`
    (e.g. mask_blur=0) apply to every brush; the per-entry dict wins over them.
    """
    layers = []
    for entry in rects:
        prompt, box, *rest = entry
        options = {**layer_options, **(rest[0] if rest else {})}
        layers.append(Layer(prompt=prompt, mask=rect_mask(height, width, box), **options))
    return Scene(height, width, layers, Background(prompt=background_prompt),
                 negative_prompt=negative_prompt).validate()


@functools.lru_cache(maxsize=None)
def _load_asset(name: str) -> Scene:
    if name not in ASSET_NAMES:
        raise ValueError(f"unknown example scene {name!r}; choose one of {ASSET_NAMES}")
    return Scene.load(ASSETS / name)


def fixture_scene(name: str = "timessquare", height: int | None = None, width: int | None = None) -> Scene:
    """An example palette from assets/ ("irworobongdo", "timessquare", "timessquare-edit"), validated.

    Give a height and/or width to scale it down (one side keeps the aspect ratio, rounded to a multiple of 8).
    """
    scene = _load_asset(name)
    if height is None and width is None:
        return scene.validate()  # a copy: the cached scene stays untouched
    return scene.resized(height, width)
