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
from .models import Models
from .visitors import VisitorLimits
from .palette import Brush, brushes_from_rows, brushes_from_scene, build_scene, rows_from_brushes, scene_masks


class Page:
    # session state
    state: gr.State        # SessionState
    count: gr.State        # how many brush rows are in use
    token: gr.State        # id of the stream run the Start click began
    # canvas
    editor: gr.ImageEditor
    canvas_h: gr.Number
    canvas_w: gr.Number
    resize_btn: gr.Button
    remove_photo_btn: gr.Button
    client_note: gr.Textbox     # hidden: messages of the page script (a refused photo) become toasts
    editor_layers: gr.Number    # hidden: the editor's layers after "+ Add brush" made one in the browser (0: not)
    # results
    model: gr.Radio
    output: gr.Image
    status: gr.Markdown
    history: gr.Gallery
    stream_btn: gr.Button
    generate_btn: gr.Button
    stop_generate_btn: gr.Button
    to_photo_btn: gr.Button
    seed: gr.Number
    dice: gr.Button
    new_seed: gr.Checkbox
    method: gr.Dropdown
    regions: gr.Radio
    # palette
    bg_prompt: gr.Textbox
    neg_prompt: gr.Textbox
    palette_name: gr.Textbox
    add_btn: gr.Button
    undo_remove_btn: gr.Button
    load_btn: gr.UploadButton
    save_btn: gr.Button
    palette_file: gr.File
    # sharing the GPU: the stream slots of semantic_draw.sharing (None on ZeroGPU) and how many runs may be open
    slots: object
    stream_runs: int
    visitors: object       # app_parts.visitors.VisitorLimits: the per-user bound
    examples: gr.Gallery
    # API only (gradio_client): /generate and /stream take a palette file
    api_palette: gr.File
    api_seed: gr.Number
    api_method: gr.Textbox
    api_regions: gr.Textbox
    api_model: gr.Textbox
    api_frames: gr.Number
    api_image: gr.Image
    api_generate_btn: gr.Button
    api_stream_btn: gr.Button

    def __init__(self, cfg: AppConfig, models: Models, colors: list[tuple[int, int, int]]):
        self.cfg, self.models, self.colors = cfg, models, colors
        self.visitors = VisitorLimits(cfg.max_per_user, cfg.forwarded_hops)
        self.row_groups: list[gr.Group] = []   # one per brush slot, shown while in use
        self.row_fields: list = []             # per slot: name, prompt, negative, alpha, blur, strength
        self.name_boxes: list[gr.Textbox] = []
        self.removers: list[gr.Button] = []    # per slot: its ✕ button
        self.movers: list[tuple[gr.Button, gr.Button]] = []   # per slot: its ↑ and ↓ buttons
        self.mask_uploads: list[gr.UploadButton] = []           # per slot: "Upload mask"

    # ---------------------------------------------------------------- component lists of the events
    @property
    def palette_inputs(self) -> list:
        """Everything the palette rows hold (the masks are in the editor)."""
        return [self.count, self.bg_prompt, self.neg_prompt] + self.row_fields

    @property
    def palette_reads(self) -> set:
        """The editor, the palette rows and the model: everything a scene is built from."""
        return {self.editor, self.model, self.palette_name, *self.palette_inputs}

    @property
    def row_outputs(self) -> list:
        """The brush rows and their count (what changes when a brush is added without touching the editor)."""
        return [self.count] + self.row_groups + self.row_fields

    @property
    def palette_outputs(self) -> list:
        """Every component that shows a palette (what `palette_update` may set)."""
        return ([self.editor, self.canvas_h, self.canvas_w, self.bg_prompt, self.neg_prompt, self.palette_name]
                + self.row_outputs)

    # ---------------------------------------------------------------- page values -> palette
    def model_name(self, data) -> str:
        return self.models.name(data.get(self.model) if self.model in data else None)

    def multiple(self, data) -> int:
        """Canvas sides are multiples of this for the model chosen on the page (16 for SD3, else 8)."""
        return self.models.multiple(self.model_name(data))

    def brushes(self, data) -> list[Brush]:
        return brushes_from_rows(data[self.count], [data[c] for c in self.row_fields])

    def fields(self, data) -> tuple:
        """What the palette rows hold: (brushes, background prompt, negative prompt)."""
        return self.brushes(data), data[self.bg_prompt] or "", data[self.neg_prompt] or ""

    def read(self, data) -> cv.Canvas:
        return cv.read_editor(data[self.editor], (self.cfg.height, self.cfg.width))

    def scene(self, data, canvas: cv.Canvas, strict: bool) -> tuple[Scene, list[str]]:
        scene, notes = build_scene(self.brushes(data), canvas, data[self.bg_prompt], data[self.neg_prompt],
                                   multiple=self.multiple(data), strict=strict)
        scene.name = (data.get(self.palette_name) or "").strip() if self.palette_name in data else ""
        return scene, notes

    # ---------------------------------------------------------------- palette -> page
    def rows_update(self, brushes: list[Brush]) -> dict:
        """The brush rows and their count (not the editor)."""
        n_max = self.cfg.max_brushes
        brushes = brushes[:n_max]
        out = {self.count: len(brushes)}
        for i, group in enumerate(self.row_groups):
            out[group] = gr.Group(visible=i < len(brushes))
        for comp, value in zip(self.row_fields, rows_from_brushes(brushes, n_max)):
            out[comp] = value
        return out

    def palette_update(self, brushes: list[Brush], canvas: cv.Canvas, bg=None, neg=None, name=None) -> dict:
        """Every output that shows a palette: editor layers, brush rows, counts and prompts."""
        brushes = brushes[:self.cfg.max_brushes]
        masks = list(canvas.masks[:len(brushes)]) + [None] * max(0, len(brushes) - len(canvas.masks))
        out = {self.editor: cv.editor_value(canvas.height, canvas.width, masks, self.colors, canvas.background),
               self.canvas_h: canvas.height, self.canvas_w: canvas.width, **self.rows_update(brushes)}
        for comp, value in ((self.bg_prompt, bg), (self.neg_prompt, neg), (self.palette_name, name)):
            if value is not None:
                out[comp] = value
        return out

    def scene_update(self, scene: Scene, multiple: int, note: str | None = None) -> dict:
        """A loaded palette onto the page (scaled to this server's canvas limit, with a note saying so)."""
        scene, fit_note = fit_scene(scene, self.cfg.max_canvas, multiple)
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
                                   scene.negative_prompt or "", scene.name or "")
