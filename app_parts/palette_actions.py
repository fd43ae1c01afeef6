"""What the palette's buttons do: add / remove brushes, resize the canvas, remove the photo, load examples and
palette files, save the palette. Each handler takes the event's values and answers with `Page.palette_update`."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
from PIL import Image

from semantic_draw import Scene, SemanticDrawError
from semantic_draw.sizes import fit

from . import canvas as cv
from .files import load_palette_file
from .page import Page
from .palette import Brush, default_name
from .session import friendly


class PaletteActions:
    def __init__(self, ui: Page, examples: list):
        self.ui, self.examples = ui, examples

    @friendly
    def add_brush(self, data):
        ui = self.ui
        brushes = ui.brushes(data)
        if len(brushes) >= ui.cfg.max_brushes:
            raise SemanticDrawError(f"This server allows at most {ui.cfg.max_brushes} brushes.")
        brushes.append(Brush(default_name(len(brushes))))
        return ui.palette_update(brushes, ui.read(data))

    def remover(self, index: int):
        """The handler of brush `index`'s ✕ button: its row and its layer go, the others keep theirs."""
        @friendly
        def remove_brush(data):
            brushes = self.ui.brushes(data)
            canvas = self.ui.read(data)
            if index >= len(brushes):
                return {}
            del brushes[index]
            if index < len(canvas.masks):
                del canvas.masks[index]
            return self.ui.palette_update(brushes, canvas)
        return remove_brush

    @friendly
    def resize_canvas(self, data):
        ui = self.ui
        canvas = ui.read(data)
        h, w = int(data[ui.canvas_h]), int(data[ui.canvas_w])
        if max(h, w) > ui.cfg.max_canvas:
            raise SemanticDrawError(f"The canvas may be at most {ui.cfg.max_canvas} px a side.")
        return ui.palette_update(ui.brushes(data), cv.resize_canvas(canvas, h, w))

    @friendly
    def remove_photo(self, data):
        canvas = self.ui.read(data)
        canvas.background = None
        return self.ui.palette_update(self.ui.brushes(data), canvas)

    @friendly
    def photo_uploaded(self, data):
        """A photo came into the editor: the canvas takes the photo's shape (within this server's limit) and the masks
        painted before are kept (stretched to it; the editor itself drops its layers when the photo arrives)."""
        ui = self.ui
        canvas = ui.read(data)
        if canvas.background is None:
            return gr.skip()
        before = data[ui.state].painted
        lost = (not any(m.any() for m in canvas.masks) and before is not None
                and any(m.any() for m in before.masks))
        photo_h, photo_w = canvas.background.height, canvas.background.width
        h, w = fit(photo_h, photo_w, ui.multiple, ui.cfg.max_canvas)
        scaled = max(photo_h, photo_w) > ui.cfg.max_canvas
        shown = (int(data[ui.canvas_h] or 0), int(data[ui.canvas_w] or 0))
        if (h, w) == (canvas.height, canvas.width) == shown and not lost:
            return gr.skip()  # also the echo of the update below
        photo = canvas.background.resize((w, h), Image.LANCZOS)
        masks = cv.resize_canvas(before if lost else canvas, h, w).masks
        if (h, w) != ((before.height, before.width) if before else (ui.cfg.height, ui.cfg.width)):
            gr.Info(f"The canvas is now {w}x{h}, the shape of the photo" +
                    (" (scaled down to this server's limit)." if scaled else "."))
        return ui.palette_update(ui.brushes(data), cv.Canvas(h, w, masks, photo))

    @friendly
    def load_example(self, evt: gr.SelectData):
        name, folder, _ = self.examples[evt.index]
        return self.ui.scene_update(Scene.load(folder), f"Loaded the example palette “{name}”.")

    @friendly
    def load_palette(self, path):
        if not path:
            raise SemanticDrawError("No palette file was uploaded.")
        return self.ui.scene_update(load_palette_file(path), "Palette loaded.")

    @friendly
    def save_palette(self, data):
        scene, notes = self.ui.scene(data, self.ui.read(data), strict=True)
        for note in notes:
            gr.Warning(note)
        path = Path(tempfile.mkdtemp(prefix="palette-")) / "semantic-palette.zip"
        scene.save(path)
        return gr.File(str(path), visible=True)
