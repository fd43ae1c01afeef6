"""One-shot generation: Generate (step k of n with previews, Stop, a new seed each time if asked, the image into the
history) and the /generate API."""
from __future__ import annotations

import random
import threading
import time

import gradio as gr

from semantic_draw import Scene, SemanticDrawError

from .config import GENERATE, STOP_GENERATE, method_label
from .files import api_palette
from .limits import check_brushes
from .page import Page
from .session import SessionState, friendly, held


def progress_bar(step: int, steps: int, width: int = 12) -> str:
    done = round(width * step / max(1, steps))
    return "▰" * done + "▱" * (width - done)


class Generation:
    def __init__(self, ui: Page, work):
        self.ui, self.work = ui, work   # work: the GPU generator of app_parts.work.make_workers

    def run(self, model: str, scene: Scene, seed, method, regions="latent", stop: threading.Event | None = None):
        """Yields (preview image or None, step, steps) after every step; returns the final image (through
        StopIteration.value), or None when `stop` was set (the generation ends at its next step)."""
        work = self.work(scene, int(seed or 0), method or "semanticdraw", regions or "latent", model=model)
        try:
            for item in work:
                if stop is not None and stop.is_set():
                    return None
                if item[0] == "step":
                    _, step, steps, image = item
                    yield image, step + 1, steps
                else:
                    return item[1]
        finally:
            work.close()
        raise SemanticDrawError("The generation ended without an image.")

    def begin(self, st: SessionState):
        """The Generate click, before the queue: a fresh stop signal, and the button becomes Stop."""
        st.stop_generation = threading.Event()
        return {self.ui.generate_btn: gr.Button(visible=False), self.ui.stop_generate_btn: gr.Button(visible=True)}

    def stop(self, st: SessionState):
        st.stop_generation.set()
        return {self.ui.generate_btn: gr.Button(GENERATE, visible=True),
                self.ui.stop_generate_btn: gr.Button(STOP_GENERATE, visible=False)}

    def end(self):
        return {self.ui.generate_btn: gr.Button(GENERATE, visible=True),
                self.ui.stop_generate_btn: gr.Button(STOP_GENERATE, visible=False)}

    @held
    def generate_ui(self, data, request: gr.Request = None):
        with self.ui.visitors.hold(request, "generation"):
            yield from self._generate_ui(data)

    def _generate_ui(self, data):
        ui = self.ui
        st: SessionState = data[ui.state]
        stop = st.stop_generation
        if stop.is_set():
            yield {ui.status: "Generation stopped."}
            return
        name = ui.model_name(data)
        scene, notes = ui.scene(data, ui.read(data), strict=True)
        scene = check_brushes(scene, ui.cfg.max_brushes).validate(max_side=ui.cfg.max_canvas,
                                                                   multiple=ui.multiple(data))
        for note in notes:
            gr.Warning(note)
        seed = int(data[ui.seed] or 0)
        if data[ui.new_seed]:
            seed = random.randrange(2**31 - 1)
            yield {ui.seed: seed}
        label = method_label(data[ui.method])
        what = f"{label} on {name}" if len(ui.models) > 1 else label
        t0 = time.monotonic()
        work = self.run(name, scene, seed, data[ui.method], data[ui.regions], stop)
        step = steps = 0
        while True:
            try:
                preview, step, steps = next(work)
            except StopIteration as done:
                image = done.value
                break
            text = (f"**{what}** · step {step} of {steps} {progress_bar(step, steps)} · "
                    f"{time.monotonic() - t0:.1f} s · seed {seed}")
            yield {ui.output: preview, ui.status: text} if preview is not None else {ui.status: text}
        took = time.monotonic() - t0
        if image is None:
            yield {ui.status: f"{what}: stopped at step {step} of {steps} after {took:.1f} s (seed {seed})."}
            return
        gallery = st.add_result(image, f"{label} · seed {seed}", ui.cfg.history)
        yield {ui.output: image, ui.history: gallery,
               ui.status: f"{what}: {scene.width}x{scene.height} in {took:.1f} s (seed {seed})"}

    @friendly
    def api_generate(self, palette, seed, method, regions="latent", model=None, request: gr.Request = None):
        """Generate one image from a palette file (.zip with scene.json and RGBA masks) with one of this server's
        models (default: the first)."""
        cfg, name = self.ui.cfg, self.ui.models.name(model)
        with self.ui.visitors.hold(request, "generation"):
            scene = api_palette(palette, cfg.max_canvas, self.ui.models.multiple(name), cfg.max_brushes,
                                cfg.max_upload_bytes)
            work = self.run(name, scene, seed, method, regions)
            while True:
                try:
                    next(work)
                except StopIteration as done:
                    return done.value
