"""One-shot generation: the Generate button (previews, then the image into the history) and the /generate API."""
from __future__ import annotations

import time

import gradio as gr

from semantic_draw import Scene, SemanticDrawError

from .config import method_label
from .files import api_palette
from .page import Page
from .session import SessionState, friendly


class Generation:
    def __init__(self, ui: Page, work):
        self.ui, self.work = ui, work   # work: the GPU generator of app_parts.work.make_workers

    def run(self, scene: Scene, seed, method, regions="latent", progress=None):
        """Yields previews, returns the final image (through StopIteration.value)."""
        for item in self.work(scene, int(seed or 0), method or "semanticdraw", regions or "latent"):
            if item[0] == "preview":
                _, step, steps, image = item
                if progress is not None:
                    progress((step + 1) / steps, desc=f"Step {step + 1} of {steps}")
                yield image
            else:
                return item[1]
        raise SemanticDrawError("The generation ended without an image.")

    @friendly
    def generate_ui(self, data, progress=gr.Progress()):
        ui = self.ui
        scene, notes = ui.scene(data, ui.read(data), strict=True)
        scene = scene.validate(max_side=ui.cfg.max_canvas, multiple=ui.multiple)
        for note in notes:
            gr.Warning(note)
        st: SessionState = data[ui.state]
        seed = int(data[ui.seed] or 0)
        label = method_label(data[ui.method])
        t0 = time.monotonic()
        work = self.run(scene, seed, data[ui.method], data[ui.regions], progress)
        while True:
            try:
                preview = next(work)
            except StopIteration as done:
                image = done.value
                break
            yield {ui.output: preview, ui.status: f"{label}: generating… (seed {seed})"}
        took = time.monotonic() - t0
        gallery = st.add_result(image, f"{label} · seed {seed}", ui.cfg.history)
        yield {ui.output: image, ui.history: gallery,
               ui.status: f"{label}: {scene.width}x{scene.height} in {took:.1f} s (seed {seed})"}

    @friendly
    def api_generate(self, palette, seed, method, regions="latent"):
        """Generate one image from a palette file (.zip with scene.json and RGBA masks)."""
        work = self.run(api_palette(palette, self.ui.cfg.max_canvas, self.ui.multiple), seed, method, regions)
        while True:
            try:
                next(work)
            except StopIteration as done:
                return done.value
