"""Warming the fast path: run the shapes a server will see once, so that nobody waits for a compile later."""
from __future__ import annotations

import time

import numpy as np

from .errors import OptionError
from .scene import Background, Layer, Scene


def warm_scene(height: int, width: int, brushes: int) -> Scene:
    """``brushes`` side-by-side stripes over a background prompt (what matters for the shapes is the count)."""
    layers = []
    for i in range(brushes):
        mask = np.zeros((height, width), bool)
        mask[:, i * width // brushes:(i + 1) * width // brushes] = True
        layers.append(Layer(f"warm-up brush {i + 1}", mask, mask_blur=0.0))
    return Scene(height, width, layers, Background("warm-up background"))


def warm(model, canvases=None, brushes=(1, 3), regions=("latent",), progress=None, tile_size=None) -> float:
    """See SemanticDraw.warm."""
    canvases = canvases or [(model.native_size, model.native_size)]
    if isinstance(regions, str):
        regions = (regions,)
    jobs = [(c, n, r) for c in canvases for n in brushes for r in regions]
    if not jobs:
        raise OptionError("warm needs at least one canvas, brush count and region layout.")
    start = time.monotonic()
    for done, ((height, width), count, layout) in enumerate(jobs, 1):
        scene = warm_scene(height, width, count)
        with model.stream(scene, seed=0, regions=layout, tile_size=tile_size) as session:
            session.next_frame(output="latent")     # the filling frame: one slot per call
            session.next_frame(output="latent")     # a steady frame: the slots in flight
            if count and width // count > 1:       # a painting frame (an edit: every slot again): the top
                mask = scene.layers[-1].mask.copy()  # brush loses its last column
                mask[:, -1] = False
                session.edit_layer(count - 1, mask=mask)
                session.next_frame(output="latent")
        model.generate(scene, seed=0, regions=layout, output="latent", tile_size=tile_size)
        if progress is not None:
            progress(done, len(jobs), f"{width}x{height}, {count} brush(es), {layout} regions")
    return time.monotonic() - start
