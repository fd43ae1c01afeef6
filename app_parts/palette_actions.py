"""What the palette's buttons do: add / remove / move brushes and undo a removal, upload a brush's mask, resize the
canvas, put a photo on it or take it off, switch the model, load examples and palette files, save the palette.

Each handler takes the event's values and answers with `Page.palette_update` (the editor gets a new value, which
starts its undo history over: the page says so) or `Page.rows_update` (the brush rows only). None of them needs the
GPU. A mistake is one message (a warning toast: `session.quiet`); the page keeps what it showed.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from semantic_draw import Scene, SemanticDrawError
from semantic_draw.sizes import fit, to_multiple

from . import canvas as cv
from .files import load_palette_file
from .limits import check_upload
from .page import Page
from .palette import Brush, default_name
from .session import SessionState, quiet

HISTORY_RESTARTS = "The canvas's undo history starts over here (Gradio's editor cannot keep it when the layers change)."


def file_name(name: str) -> str:
    """A palette's name as a file name: "My scene!" -> "My-scene.zip" ("palette.zip" for no name)."""
    stem = re.sub(r"[^\w-]+", "-", (name or "").strip(), flags=re.UNICODE).strip("-")[:60]
    return f"{stem or 'palette'}.zip"


class PaletteActions:
    def __init__(self, ui: Page, examples: list):
        self.ui, self.examples = ui, examples

    # ---------------------------------------------------------------- brushes
    @quiet
    def add_brush(self, data):
        """A new brush row. When the browser already added its layer (frontend.ADD_LAYER: the editor keeps its undo
        history) and the editor's layers match the brushes, only the rows change; otherwise the editor gets the
        palette with one more layer (and the page says that its undo history starts over)."""
        ui = self.ui
        brushes = ui.brushes(data)
        if len(brushes) >= ui.cfg.max_brushes:
            raise SemanticDrawError(f"This server allows at most {ui.cfg.max_brushes} brushes.")
        brushes.append(Brush(default_name(len(brushes))))
        if int(data[ui.editor_layers] or 0) == len(brushes):
            return ui.rows_update(brushes)
        gr.Info(HISTORY_RESTARTS)
        return ui.palette_update(brushes, ui.read(data))

    def remover(self, index: int):
        """The handler of brush `index`'s ✕ button: its row and its layer go, the others keep theirs; "Undo remove"
        brings it back."""
        @quiet
        def remove_brush(data):
            ui = self.ui
            brushes, canvas = ui.brushes(data), ui.read(data)
            if index >= len(brushes):
                return {}
            st: SessionState = data[ui.state]
            mask = canvas.masks.pop(index) if index < len(canvas.masks) else None
            st.removed = (index, brushes.pop(index), mask, (canvas.height, canvas.width))
            gr.Info(f"Removed {st.removed[1].name}. “↶ Undo remove” brings it back. {HISTORY_RESTARTS}")
            return {**ui.palette_update(brushes, canvas), ui.undo_remove_btn: gr.Button(visible=True)}
        return remove_brush

    @quiet
    def undo_remove(self, data):
        ui = self.ui
        st: SessionState = data[ui.state]
        if st.removed is None:
            return {ui.undo_remove_btn: gr.Button(visible=False)}
        brushes, canvas = ui.brushes(data), ui.read(data)
        if len(brushes) >= ui.cfg.max_brushes:
            raise SemanticDrawError(f"This server allows at most {ui.cfg.max_brushes} brushes: remove one first.")
        index, brush, mask, size = st.removed
        st.removed = None
        index = min(index, len(brushes))
        if mask is not None and size != (canvas.height, canvas.width):
            mask = np.asarray(Image.fromarray(mask).resize((canvas.width, canvas.height), Image.NEAREST))
        masks = canvas.masks[:len(brushes)] + [None] * max(0, len(brushes) - len(canvas.masks))
        masks.insert(index, mask)
        brushes.insert(index, brush)
        canvas.masks = [np.zeros((canvas.height, canvas.width), np.uint8) if m is None else m for m in masks]
        return {**ui.palette_update(brushes, canvas), ui.undo_remove_btn: gr.Button(visible=False)}

    def mover(self, index: int, step: int):
        """The handler of brush `index`'s ↑ (step -1) or ↓ (step +1): it trades places with its neighbour, mask and
        all (later brushes cover earlier ones)."""
        @quiet
        def move_brush(data):
            ui = self.ui
            brushes, canvas = ui.brushes(data), ui.read(data)
            other = index + step
            if not (0 <= index < len(brushes) and 0 <= other < len(brushes)):
                return {}
            masks = canvas.masks[:len(brushes)] + [np.zeros((canvas.height, canvas.width), np.uint8)] * max(
                0, len(brushes) - len(canvas.masks))
            brushes[index], brushes[other] = brushes[other], brushes[index]
            masks[index], masks[other] = masks[other], masks[index]
            canvas.masks = masks
            return ui.palette_update(brushes, canvas)
        return move_brush

    def mask_uploader(self, index: int):
        """The handler of brush `index`'s "Upload mask": a black-and-white or transparent image becomes its mask."""
        @quiet
        def upload_mask(data):
            ui = self.ui
            path = data[ui.mask_uploads[index]]
            if not path:
                return {}
            brushes, canvas = ui.brushes(data), ui.read(data)
            if index >= len(brushes):
                return {}
            check_upload(path, ui.cfg.max_upload_bytes, "The mask file")
            mask, note = cv.mask_from_image(path, canvas.height, canvas.width)
            masks = canvas.masks[:len(brushes)] + [np.zeros((canvas.height, canvas.width), np.uint8)] * max(
                0, len(brushes) - len(canvas.masks))
            masks[index] = mask
            canvas.masks = masks
            gr.Info(f"{brushes[index].name} now paints the uploaded mask. {note or ''}".strip())
            return ui.palette_update(brushes, canvas)
        return upload_mask

    # ---------------------------------------------------------------- canvas
    @quiet
    def resize_canvas(self, data):
        ui = self.ui
        canvas = ui.read(data)
        multiple, limit = ui.multiple(data), ui.cfg.max_canvas
        asked = data[ui.canvas_h], data[ui.canvas_w]
        try:
            h, w = (int(round(float(v))) for v in asked)
        except (TypeError, ValueError):
            raise SemanticDrawError("Type the canvas height and width in pixels.") from None
        if max(h, w) > limit or min(h, w) < multiple * 4:   # said, not silently clamped; the boxes show the canvas
            gr.Warning(f"The canvas may be {multiple * 4} to {limit} px a side; {w}x{h} is "
                       f"{'too large' if max(h, w) > limit else 'too small'}. The canvas stays {canvas.width}x"
                       f"{canvas.height}.")
            return {ui.canvas_h: canvas.height, ui.canvas_w: canvas.width}
        rh, rw = to_multiple(h, multiple), to_multiple(w, multiple)
        if (rh, rw) != (h, w):
            gr.Info(f"The canvas is {rw}x{rh}: this model takes sides that are multiples of {multiple}.")
        return ui.palette_update(ui.brushes(data), cv.resize_canvas(canvas, rh, rw))

    @quiet
    def remove_photo(self, data):
        canvas = self.ui.read(data)
        canvas.background = None
        return self.ui.palette_update(self.ui.brushes(data), canvas)

    @quiet
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
        h, w = fit(photo_h, photo_w, ui.multiple(data), ui.cfg.max_canvas)
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

    @quiet
    def output_to_photo(self, data):
        """The output image becomes the canvas's photo (to keep editing it); the brushes keep their masks."""
        ui = self.ui
        image = data[ui.output]
        if image is None:
            raise SemanticDrawError("There is no output yet: Generate or stream first.")
        canvas = ui.read(data)
        canvas.background = image.convert("RGB").resize((canvas.width, canvas.height), Image.LANCZOS)
        gr.Info("The output is now the canvas's photo: paint the regions to change and Generate again.")
        return ui.palette_update(ui.brushes(data), canvas)

    @quiet
    def switch_model(self, data):
        """Another model: the palette stays; the canvas is rounded (masks rescaled) when its sides are not multiples
        of what the new model takes. The editor is only sent a new value then."""
        ui = self.ui
        name, multiple = ui.model_name(data), ui.multiple(data)
        canvas = ui.read(data)
        out = {ui.canvas_h: gr.Number(step=multiple), ui.canvas_w: gr.Number(step=multiple)}
        h, w = fit(canvas.height, canvas.width, multiple)
        if (h, w) != (canvas.height, canvas.width):
            gr.Info(f"{name} takes canvas sides that are multiples of {multiple}: the canvas is now {w}x{h} "
                    f"(was {canvas.width}x{canvas.height}) and the masks were scaled to it.")
            out.update(ui.palette_update(ui.brushes(data), cv.resize_canvas(canvas, h, w)))
            out[ui.canvas_h], out[ui.canvas_w] = gr.Number(h, step=multiple), gr.Number(w, step=multiple)
        native = ui.models[name].native_size
        if max(h, w) < native * 0.75:
            gr.Info(f"{name} draws best near {native} px a side; this canvas is {w}x{h} (Resize canvas to change).")
        return out

    # ---------------------------------------------------------------- files
    @quiet
    def load_example(self, model, evt: gr.SelectData):
        name, folder, _ = self.examples[evt.index]
        return {**self.ui.scene_update(Scene.load(folder), self.ui.models.multiple(model),
                                       f"Loaded the example palette “{name}”."),
                **self.cleared_output()}

    @quiet
    def load_palette(self, path, model):
        if not path:
            raise SemanticDrawError("No palette file was uploaded.")
        scene = load_palette_file(path, max_bytes=self.ui.cfg.max_upload_bytes)
        return {**self.ui.scene_update(scene, self.ui.models.multiple(model), "Palette loaded."),
                **self.cleared_output()}

    def cleared_output(self) -> dict:
        return {self.ui.output: None, self.ui.status: ""}

    @quiet
    def save_palette(self, data):
        scene, notes = self.ui.scene(data, self.ui.read(data), strict=True)
        for note in notes:
            gr.Warning(note)
        path = Path(tempfile.mkdtemp(prefix="palette-")) / file_name(scene.name)
        scene.save(path)
        return gr.File(str(path))

    @staticmethod
    def note(message: str):
        """A message of the page script (frontend.py), e.g. a refused photo: shown as a warning toast."""
        message = (message or "").replace("\u200b", "").strip()
        if message:
            gr.Warning(message)
