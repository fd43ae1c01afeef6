"""The page's components as the handlers see them, and the two ways between them and a palette.

app.py lays the page out, one builder per section, and puts each component it draws on a `Page`
(ui.editor = gr.ImageEditor(...)); its event wiring finds the buttons there, and the handlers
(app_parts.palette_actions, .generation, .streaming) read the values of an event through it (`data[ui.editor]`) and
answer with updates keyed by its components (`palette_update`).
"""
from __future__ import annotations

import gradio as gr

from semantic_draw import Scene

from . import canvas as cv
from .config import AppConfig
from .files import fit_scene
from .palette import Brush, brushes_from_rows, brushes_from_scene, build_scene, rows_from_brushes, scene_masks


class Page:
    # session state
    state: gr.State        # SessionState
    count: gr.State        # how many brush rows are in use
    token: gr.State        # id of the stream run the Start click began
    # canvas
    editor: gr.ImageEditor
    canvas_h: gr.Slider
    canvas_w: gr.Slider
    resize_btn: gr.Button
    remove_photo_btn: gr.Button
    # results
    output: gr.Image
    status: gr.Markdown
    history: gr.Gallery
    stream_btn: gr.Button
    generate_btn: gr.Button
    seed: gr.Number
    dice: gr.Button
    method: gr.Dropdown
    regions: gr.Radio
    # palette
    bg_prompt: gr.Textbox
    neg_prompt: gr.Textbox
    add_btn: gr.Button
    load_btn: gr.UploadButton
    save_btn: gr.Button
    palette_file: gr.File
    # sharing the GPU: the stream slots of semantic_draw.sharing (None on ZeroGPU) and how many runs may be open
    slots: object
    stream_runs: int
    examples: gr.Gallery
    # API only (gradio_client): /generate and /stream take a palette file
    api_palette: gr.File
    api_seed: gr.Number
    api_method: gr.Textbox
    api_frames: gr.Number
    api_image: gr.Image
    api_generate_btn: gr.Button
    api_stream_btn: gr.Button

    def __init__(self, cfg: AppConfig, multiple: int, colors: list[tuple[int, int, int]]):
        self.cfg, self.multiple, self.colors = cfg, multiple, colors
        self.row_groups: list[gr.Group] = []   # one per brush slot, shown while in use
        self.row_fields: list = []             # per slot: name, prompt, negative, alpha, blur, strength
        self.name_boxes: list[gr.Textbox] = []
        self.removers: list[gr.Button] = []    # per slot: its ✕ button

    # ---------------------------------------------------------------- component lists of the events
    @property
    def palette_inputs(self) -> list:
        """Everything the palette rows hold (the masks are in the editor)."""
        return [self.count, self.bg_prompt, self.neg_prompt] + self.row_fields

    @property
    def palette_reads(self) -> set:
        """The editor and the palette rows: everything a scene is built from."""
        return {self.editor, *self.palette_inputs}

    @property
    def palette_outputs(self) -> list:
        """Every component that shows a palette (what `palette_update` may set)."""
        return ([self.editor, self.count, self.canvas_h, self.canvas_w, self.bg_prompt, self.neg_prompt]
                + self.row_groups + self.row_fields)

    # ---------------------------------------------------------------- page values -> palette
    def brushes(self, data) -> list[Brush]:
        return brushes_from_rows(data[self.count], [data[c] for c in self.row_fields])

    def fields(self, data) -> tuple:
        """What the palette rows hold: (brushes, background prompt, negative prompt)."""
        return self.brushes(data), data[self.bg_prompt] or "", data[self.neg_prompt] or ""

    def read(self, data) -> cv.Canvas:
        return cv.read_editor(data[self.editor], (self.cfg.height, self.cfg.width))

    def scene(self, data, canvas: cv.Canvas, strict: bool) -> tuple[Scene, list[str]]:
        return build_scene(self.brushes(data), canvas, data[self.bg_prompt], data[self.neg_prompt],
                           multiple=self.multiple, strict=strict)

    # ---------------------------------------------------------------- palette -> page
    def palette_update(self, brushes: list[Brush], canvas: cv.Canvas, bg=None, neg=None) -> dict:
        """Every output that shows a palette: editor layers, brush rows, counts and prompts."""
        n_max = self.cfg.max_brushes
        brushes = brushes[:n_max]
        masks = list(canvas.masks[:len(brushes)]) + [None] * max(0, len(brushes) - len(canvas.masks))
        out = {self.editor: cv.editor_value(canvas.height, canvas.width, masks, self.colors, canvas.background),
               self.count: len(brushes), self.canvas_h: canvas.height, self.canvas_w: canvas.width}
        for i, group in enumerate(self.row_groups):
            out[group] = gr.Group(visible=i < len(brushes))
        for comp, value in zip(self.row_fields, rows_from_brushes(brushes, n_max)):
            out[comp] = value
        if bg is not None:
            out[self.bg_prompt] = bg
        if neg is not None:
            out[self.neg_prompt] = neg
        return out

    def scene_update(self, scene: Scene, note: str | None = None) -> dict:
        """A loaded palette onto the page (scaled to this server's canvas limit, with a note saying so)."""
        scene, fit_note = fit_scene(scene, self.cfg.max_canvas, self.multiple)
        for msg in (note, fit_note):
            if msg:
                gr.Info(msg)
        n_max = self.cfg.max_brushes
        if len(scene.layers) > n_max:
            gr.Warning(f"The palette has {len(scene.layers)} brushes; this server takes {n_max}, so the last "
                       f"{len(scene.layers) - n_max} were left out.")
        canvas = cv.Canvas(scene.height, scene.width, [m.astype("uint8") * 255 for m in scene_masks(scene)],
                           scene.background.image)
        return self.palette_update(brushes_from_scene(scene), canvas, scene.background.prompt or "",
                                   scene.negative_prompt or "")
