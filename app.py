"""SemanticDraw: paint with semantic brushes and watch a diffusion model turn the painting into an image, live.

    python app.py --preset sd15                    # or sd15-hyper, sdxl, sd3, tiny-sd15 (offline, CPU-friendly)
    python app.py --preset sd15,sdxl,sd3           # several models, all resident; the page has a model selector
    python app.py --model <hub id or path> --lora <id or path> --height 768 --width 768

This file draws the page, one builder per section from left to right and top to bottom, and wires its events; what
the events do lives in app_parts/ (palette_actions, generation, streaming), and all generation logic in
`semantic_draw`. `create_demo(models, **config)` builds the page around already loaded models (one SemanticDraw, or
a dict name -> SemanticDraw; tests launch it in-process).
"""
from __future__ import annotations

import argparse
import logging
import os
import random
from dataclasses import replace

import gradio as gr

from semantic_draw import SemanticDrawError
from semantic_draw.options import COMPILE_SHAPES
from semantic_draw.scene import palette_colors

from app_parts import canvas as cv
from app_parts.auth import AUTH_ENV, auth_pairs
from app_parts.config import GENERATE, METHOD_CHOICES, REGION_CHOICES, START, STOP_GENERATE, AppConfig
from app_parts.files import load_examples
from app_parts.frontend import ADD_LAYER, DOWNLOAD, SET_NAMES, hex_colors, page_css, page_script, swatch
from app_parts.generation import Generation
from app_parts.limits import MAX_PROMPT_CHARS, BoundedImageEditor
from app_parts.models import Models, load_models, memory_report
from app_parts.page import Page
from app_parts.palette import STARTER, STARTER_BACKGROUND, STARTER_NEGATIVE, Brush, default_name
from app_parts.palette_actions import PaletteActions
from app_parts.session import SessionState, close_session, report_error
from app_parts.streaming import Streaming
from app_parts import fastpath
from app_parts.work import GPU, ON_ZERO_GPU, make_workers, spaces_module, stream_slots

__all__ = ["AppConfig", "create_demo", "launch", "main"]
log = logging.getLogger("semantic_draw.app")
MAX_GPU_SECONDS = 300   # the longest a ZeroGPU task may hold the GPU


def create_demo(models, **config) -> gr.Blocks:
    """The page around loaded models: one SemanticDraw, or a dict name -> SemanticDraw (the first is the default).
    Keyword arguments: any AppConfig field."""
    models = Models(models)
    cfg = AppConfig(**config)
    cfg.fit_canvas_size(models.multiple(models.default))
    colors = palette_colors(cfg.max_brushes)
    starter = [replace(b) for b in STARTER[:cfg.max_brushes]]
    examples = load_examples(cfg.assets)
    ui = Page(cfg, models, colors)

    with gr.Blocks(title=cfg.title, fill_width=True) as demo:
        demo.sd_config = cfg
        demo.sd_launch_style = dict(css=page_css(colors),
                                    js=page_script([b.name for b in starter], colors, cfg.max_canvas,
                                                  cfg.max_brushes),
                                    theme=gr.themes.Soft(),
                                    max_file_size=cfg.max_upload_bytes)   # every upload, before it is stored
        session_state(ui, len(starter))
        header(ui)
        with gr.Row(equal_height=False):
            canvas_column(ui, [b.name for b in starter])
            brush_column(ui, starter)
            output_column(ui)
        example_gallery(ui, examples)
        api_components(ui)
        wire_events(ui, examples)

    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=1)
    return demo


# ---------------------------------------------------------------- the page, left to right, top to bottom
def session_state(ui: Page, brushes: int) -> None:
    """Per-visitor state: the session (stream, history), how many brush rows are in use, the stream run's id."""
    ui.state = gr.State(SessionState(), delete_callback=close_session)
    ui.count = gr.State(brushes)
    ui.token = gr.State(None)


def header(ui: Page) -> None:
    gr.Markdown(f"# {ui.cfg.title}\nPick a brush (its colour dot, or the layer menu under the canvas) and paint its "
                "region; type what it should become next to it. **Start stream** and keep painting and typing, or "
                "**Generate** one image of any size.", elem_id="sd-title")


def canvas_column(ui: Page, layer_names: list[str]) -> None:
    """The canvas (one editor layer per brush), its size boxes, Resize canvas and Remove photo."""
    cfg, colors = ui.cfg, hex_colors(ui.colors)
    multiple = ui.models.multiple(ui.models.default)
    with gr.Column(scale=6, min_width=420, elem_id="sd-canvas-col"):
        brush_size = max(4, min(cfg.height, cfg.width) // 12)
        ui.editor = BoundedImageEditor(   # gr.ImageEditor refusing, before decoding, values beyond the limits
            max_side=cfg.max_canvas, max_layers=cfg.max_brushes,
            value=cv.editor_value(cfg.height, cfg.width, [], []), type="numpy", image_mode="RGBA",
            format="png", label="Canvas: one layer per brush (upload a photo to edit it)",
            layers=gr.LayerOptions(allow_additional_layers=False, layers=layer_names),
            brush=gr.Brush(colors=colors, default_color=colors[0], color_mode="defaults", default_size=brush_size),
            eraser=gr.Eraser(default_size=brush_size),
            canvas_size=(cfg.width, cfg.height), transforms=(), sources=("upload", "clipboard"),
            height=480, elem_id="sd-editor")
        with gr.Row():
            ui.canvas_h = gr.Number(cfg.height, precision=0, step=multiple, label="Height (px)", min_width=90,
                                    elem_id="sd-canvas-h")
            ui.canvas_w = gr.Number(cfg.width, precision=0, step=multiple, label="Width (px)", min_width=90,
                                    elem_id="sd-canvas-w")
            ui.resize_btn = gr.Button("Resize canvas", size="sm", min_width=90, elem_id="sd-resize")
            ui.remove_photo_btn = gr.Button("Remove photo", size="sm", min_width=90, elem_id="sd-remove-photo")
        gr.Markdown("<small>Undo (↶ above the canvas) keeps your strokes when you add a brush; removing, moving or "
                    "uploading a brush's mask, resizing and loading a palette start it over (Gradio's editor "
                    "cannot keep it then). A brush painted at a lower opacity draws at that fraction of its mask "
                    "alpha.</small>", elem_id="sd-undo-note")
        ui.client_note = gr.Textbox(visible="hidden", elem_id="sd-client-note", show_label=False)
        ui.editor_layers = gr.Number(0, precision=0, visible="hidden", elem_id="sd-editor-layers", show_label=False)


def brush_column(ui: Page, starter: list[Brush]) -> None:
    """Next to the canvas: the background prompt, one compact row per brush slot (shown while in use), add / undo,
    and the palette's name, negative prompt, load and save."""
    with gr.Column(scale=4, min_width=380, elem_id="sd-brush-col"):
        ui.bg_prompt = gr.Textbox(STARTER_BACKGROUND, label="Background prompt (everything not painted)", lines=1,
                                  max_length=MAX_PROMPT_CHARS, elem_id="sd-bg-prompt")
        for i in range(ui.cfg.max_brushes):
            brush_row(ui, i, starter[i] if i < len(starter) else Brush(default_name(i)), visible=i < len(starter))
        with gr.Row():
            ui.add_btn = gr.Button("+ Add brush", size="sm", elem_id="sd-add")
            ui.undo_remove_btn = gr.Button("↶ Undo remove", size="sm", visible=False, elem_id="sd-undo-remove")
        with gr.Accordion("Palette: name, negative prompt, load, save", open=True, elem_id="sd-palette"):
            with gr.Row():
                ui.palette_name = gr.Textbox("", label="Palette name", placeholder="my-scene", max_length=80,
                                             min_width=120, elem_id="sd-palette-name")
                ui.neg_prompt = gr.Textbox(STARTER_NEGATIVE, label="Negative prompt (all brushes unless they set "
                                           "one)", scale=2, max_length=MAX_PROMPT_CHARS, elem_id="sd-neg-prompt")
            with gr.Row():
                ui.load_btn = gr.UploadButton("Load palette (.zip)", file_types=[".zip"], size="sm",
                                              elem_id="sd-load")
                ui.save_btn = gr.Button("Save palette", size="sm", elem_id="sd-save")
            ui.palette_file = gr.File(label="Palette file", visible=False, elem_id="sd-palette-file")


def brush_row(ui: Page, i: int, b: Brush, visible: bool) -> None:
    """Brush slot i: colour swatch (picks its layer), name, prompt, ↑ ↓ ✕; folded under them its negative prompt, a
    mask upload and the mask / strength sliders."""
    with gr.Group(visible=visible, elem_classes=["sd-brush"], elem_id=f"sd-brush-{i + 1}") as group:
        with gr.Row(equal_height=True, elem_classes=["sd-line"]):
            gr.HTML(swatch(ui.colors[i], i), min_width=34, scale=0, padding=False, elem_classes=["sd-swatch-box"])
            name = gr.Textbox(b.name, show_label=False, scale=1, min_width=96, max_length=40, container=False,
                              placeholder="name", elem_classes=["sd-name"])
            prompt = gr.Textbox(b.prompt, show_label=False, scale=3, min_width=100, container=False,
                                max_length=MAX_PROMPT_CHARS, placeholder="what to draw here")
            up = gr.Button("↑", scale=0, min_width=34, size="sm", elem_classes=["sd-small", "sd-up"])
            down = gr.Button("↓", scale=0, min_width=34, size="sm", elem_classes=["sd-small", "sd-down"])
            ui.removers.append(gr.Button("✕", scale=0, min_width=34, elem_classes=["sd-remove", "sd-small"],
                                         size="sm"))
        with gr.Accordion("Negative prompt, mask file, sliders", open=False):
            with gr.Row():
                negative = gr.Textbox(b.negative_prompt, label="Negative prompt", scale=3,
                                      max_length=MAX_PROMPT_CHARS, placeholder="(the palette's)")
                upload = gr.UploadButton("Upload mask", file_types=["image"], size="sm", scale=1,
                                         elem_classes=["sd-mask-upload"])
            with gr.Row():
                alpha = gr.Slider(0, 1, value=b.mask_strength, step=0.05, label="Mask alpha")
                blur = gr.Slider(0, 64, value=b.mask_blur, step=1, label="Mask blur (px)")
                strength = gr.Slider(0, 1, value=b.prompt_strength, step=0.05, label="Prompt strength")
    ui.row_groups.append(group)
    ui.row_fields.extend([name, prompt, negative, alpha, blur, strength])
    ui.name_boxes.append(name)
    ui.movers.append((up, down))
    ui.mask_uploads.append(upload)


def output_column(ui: Page) -> None:
    """The model, the output image and its status, Start stream / Generate (Stop), seed, method, layout, history."""
    cfg, models = ui.cfg, ui.models
    with gr.Column(scale=4, min_width=360, elem_id="sd-output-col"):
        ui.model = gr.Radio([(models.label(n), n) for n in models.names], value=models.default, label="Model",
                            visible=len(models) > 1, elem_id="sd-model")
        ui.output = gr.Image(label="Output", type="pil", format="png", interactive=False, height=400,
                             elem_id="sd-output", buttons=["download", "fullscreen"])
        ui.status = gr.Markdown("", elem_id="sd-status")
        with gr.Row():
            ui.stream_btn = gr.Button(START, variant="primary", elem_id="sd-stream")
            ui.generate_btn = gr.Button(GENERATE, variant="secondary", elem_id="sd-generate")
            ui.stop_generate_btn = gr.Button(STOP_GENERATE, variant="stop", visible=False,
                                             elem_id="sd-stop-generate")
        ui.to_photo_btn = gr.Button("Use the output as the canvas photo (keep editing it)", size="sm",
                                    elem_id="sd-to-photo")
        with gr.Row():
            ui.seed = gr.Number(0, precision=0, label="Seed", minimum=0, maximum=2**31 - 1, scale=2, min_width=100,
                                elem_id="sd-seed")
            ui.dice = gr.Button("Random", scale=0, min_width=80, elem_id="sd-dice")
            ui.new_seed = gr.Checkbox(False, label="New seed each Generate", scale=2, min_width=120,
                                      elem_id="sd-new-seed")
        ui.method = gr.Dropdown(METHOD_CHOICES, value="semanticdraw", label="Method (one-shot)")
        ui.regions = gr.Radio(REGION_CHOICES, value="latent", label="Region layout (stream: at the next Start)",
                              elem_id="sd-regions")
        limit_note = (f"Each stream stops after {cfg.stream_time_limit:g} s; start it again to continue."
                      if cfg.stream_time_limit else "")
        gr.Markdown(f"<small>Stream canvases up to {cfg.max_stream_side} px a side; one-shot up to "
                    f"{cfg.max_canvas} px (large canvases are tiled). {limit_note}</small>")
        ui.history = gr.Gallery(label="History", columns=4, height=200, elem_id="sd-history",
                                buttons=["download", "fullscreen"])


def example_gallery(ui: Page, examples: list) -> None:
    gr.Markdown("## Examples: click one to load its brushes, masks and prompts")
    ui.examples = gr.Gallery([(p, n) for n, _, p in examples], columns=min(4, max(1, len(examples))),
                             height="auto", allow_preview=False, label="Examples", elem_id="sd-examples",
                             interactive=False, object_fit="contain")


def api_components(ui: Page) -> None:
    """API-only inputs and outputs (gradio_client), hidden: /generate and /stream take a palette file."""
    with gr.Column(visible=False):
        ui.api_palette = gr.File(label="palette", file_types=[".zip"])
        ui.api_seed = gr.Number(0, precision=0, label="seed")
        ui.api_method = gr.Textbox("semanticdraw", label="method: semanticdraw, multidiffusion-fast or multidiffusion")
        ui.api_regions = gr.Textbox("latent", label="regions: latent (one view per brush) or attention")
        ui.api_model = gr.Textbox(ui.models.default, label=f"model: {', '.join(ui.models.names)}")
        ui.api_frames = gr.Number(8, precision=0, label="frames")
        ui.api_image = gr.Image(type="pil", format="png", label="image")
        ui.api_generate_btn = gr.Button()
        ui.api_stream_btn = gr.Button()


# ---------------------------------------------------------------- events
# Page-only events need no GPU. Their errors are one toast: no progress display, so no component of the page turns
# into a red "Error" badge that hides what it shows.
QUICK = dict(api_visibility="undocumented", concurrency_limit=None, show_progress="hidden")
LIVE_EDIT = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden", trigger_mode="always_last")


def wire_events(ui: Page, examples: list) -> None:
    cfg = ui.cfg
    ui.slots = stream_slots(cfg.max_streams)
    # With slots, a settled stream gives its GPU slot away, so more runs may be open than compute at once.
    ui.stream_runs = cfg.max_streams if ui.slots is None else max(8, 4 * cfg.max_streams)
    stream_seconds = min(MAX_GPU_SECONDS, int(cfg.stream_time_limit or MAX_GPU_SECONDS - 30) + 30)
    generate_work, stream_work = make_workers(ui.models, generate_duration=min(MAX_GPU_SECONDS,
                                                                               cfg.generate_duration),
                                              stream_duration=stream_seconds, slots=ui.slots)
    gen, live = Generation(ui, generate_work), Streaming(ui, stream_work)
    palette = PaletteActions(ui, examples)
    wire_palette(ui, palette)
    wire_brushes(ui, palette)
    wire_model(ui, palette, live)
    wire_generate(ui, gen)
    wire_stream(ui, live)
    wire_api(ui, gen, live)


def then_rename(ui: Page, event):
    """The editor's layer names follow the brush names."""
    return event.then(None, ui.name_boxes, None, js=SET_NAMES, api_visibility="private")


def wire_palette(ui: Page, palette: PaletteActions) -> None:
    """Canvas, files, seed dice: page-only events that need no GPU."""
    reads = ui.palette_reads
    for name in ui.name_boxes:
        name.change(None, ui.name_boxes, None, js=SET_NAMES, api_visibility="private")
    then_rename(ui, gr.on([ui.resize_btn.click, ui.canvas_h.submit, ui.canvas_w.submit], palette.resize_canvas,
                          {ui.canvas_h, ui.canvas_w, *reads}, ui.palette_outputs, **QUICK))
    then_rename(ui, ui.editor.upload(palette.photo_uploaded, {ui.state, ui.canvas_h, ui.canvas_w, *reads},
                                     ui.palette_outputs, **QUICK))
    then_rename(ui, ui.remove_photo_btn.click(palette.remove_photo, reads, ui.palette_outputs, **QUICK))
    then_rename(ui, ui.to_photo_btn.click(palette.output_to_photo, {ui.output, *reads}, ui.palette_outputs,
                                          **QUICK))
    then_rename(ui, ui.examples.select(palette.load_example, ui.model,
                                       ui.palette_outputs + [ui.output, ui.status], **QUICK))
    then_rename(ui, ui.load_btn.upload(palette.load_palette, [ui.load_btn, ui.model],
                                       ui.palette_outputs + [ui.output, ui.status], **QUICK))
    ui.save_btn.click(palette.save_palette, reads, ui.palette_file, **QUICK).then(
        None, ui.palette_file, None, js=DOWNLOAD, api_visibility="private")
    ui.client_note.change(palette.note, ui.client_note, None, **QUICK)
    ui.dice.click(lambda: random.randrange(2**31 - 1), None, ui.seed, queue=False, **QUICK)


def wire_brushes(ui: Page, palette: PaletteActions) -> None:
    """Add (its layer made in the browser, so the editor keeps its undo history), remove and undo, move up and down,
    upload a mask."""
    reads = ui.palette_reads
    then_rename(ui, ui.add_btn.click(None, None, ui.editor_layers, js=ADD_LAYER, api_visibility="private").then(
        palette.add_brush, {ui.editor_layers, *reads}, ui.palette_outputs, **QUICK))
    for i, remove in enumerate(ui.removers):
        then_rename(ui, remove.click(palette.remover(i), {ui.state, *reads},
                                     ui.palette_outputs + [ui.undo_remove_btn], **QUICK))
    then_rename(ui, ui.undo_remove_btn.click(palette.undo_remove, {ui.state, *reads},
                                             ui.palette_outputs + [ui.undo_remove_btn], **QUICK))
    for i, (up, down) in enumerate(ui.movers):
        then_rename(ui, up.click(palette.mover(i, -1), reads, ui.palette_outputs, **QUICK))
        then_rename(ui, down.click(palette.mover(i, +1), reads, ui.palette_outputs, **QUICK))
    for i, upload in enumerate(ui.mask_uploads):
        then_rename(ui, upload.upload(palette.mask_uploader(i), {upload, *reads}, ui.palette_outputs, **QUICK))


def wire_model(ui: Page, palette: PaletteActions, live: Streaming) -> None:
    """Another model: the palette stays (rounded to the model's canvas multiple if it must), a running stream restarts
    on the new model."""
    if len(ui.models) < 2:
        return
    then_stream(ui, live, ui.model.change(palette.switch_model, ui.palette_reads, ui.palette_outputs, **QUICK).then(
        live.restart, ui.state, [ui.stream_btn, ui.token, ui.status], **QUICK))


def wire_generate(ui: Page, gen: Generation) -> None:
    """One-shot generation: step k of n in the status with the previews, Stop while it runs."""
    buttons = [ui.generate_btn, ui.stop_generate_btn]
    ui.generate_btn.click(gen.begin, ui.state, buttons, queue=False, **QUICK).then(
        gen.generate_ui, {ui.state, ui.seed, ui.new_seed, ui.method, ui.regions, *ui.palette_reads},
        [ui.output, ui.history, ui.status, ui.seed], api_visibility="undocumented",
        concurrency_limit=ui.cfg.max_generations, concurrency_id="generate", show_progress="hidden").then(
        gen.end, None, buttons, **QUICK).then(report_error, ui.state, None, **QUICK)
    ui.stop_generate_btn.click(gen.stop, ui.state, buttons, queue=False, **QUICK)


def then_stream(ui: Page, live: Streaming, event) -> None:
    """After `event` handed out a stream run's id (Start, a model switch): the run's frames, then the button, then
    the run's failure (if any) as one message."""
    event.then(live.stream_ui, {ui.state, ui.token, ui.seed, ui.regions, *ui.palette_reads},
               [ui.output, ui.status, ui.stream_btn], api_visibility="undocumented",
               concurrency_limit=ui.stream_runs, concurrency_id="stream", show_progress="hidden").then(
        live.sync_button, ui.state, ui.stream_btn, **QUICK).then(report_error, ui.state, None, **QUICK)


def wire_stream(ui: Page, live: Streaming) -> None:
    """Start / Stop, then the frames; every edit meanwhile reaches the running stream."""
    then_stream(ui, live, ui.stream_btn.click(live.toggle, ui.state, [ui.stream_btn, ui.token], queue=False,
                                              **QUICK))
    ui.editor.change(live.edit_canvas, {ui.state, ui.editor}, None, **LIVE_EDIT)
    gr.on([c.change for c in [ui.count, ui.bg_prompt, ui.neg_prompt] + ui.row_fields], live.edit_fields,
          {ui.state, *ui.palette_inputs}, None, **LIVE_EDIT)
    ui.seed.change(live.edit_seed, [ui.state, ui.seed], None, **LIVE_EDIT)


def wire_api(ui: Page, gen: Generation, live: Streaming) -> None:
    """API: palette file in, image(s) out; the region layout and the model are optional (default: latent, the
    first model)."""
    cfg = ui.cfg
    ui.api_generate_btn.click(gen.api_generate,
                              [ui.api_palette, ui.api_seed, ui.api_method, ui.api_regions, ui.api_model],
                              ui.api_image,
                              api_name="generate", concurrency_limit=cfg.max_generations, concurrency_id="generate")
    ui.api_stream_btn.click(live.api_stream, [ui.api_palette, ui.api_seed, ui.api_frames, ui.api_regions, ui.api_model],
                            ui.api_image,
                            api_name="stream", concurrency_limit=ui.stream_runs, concurrency_id="stream")


def launch(demo: gr.Blocks, **kwargs):
    """demo.launch with the page's style and script (Gradio 6 takes them at launch)."""
    return demo.launch(**{**demo.sd_launch_style, **kwargs})


def names(values: list[str]) -> list[str]:
    """--preset a,b --preset c -> [a, b, c] (each once, in order)."""
    out = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip() and v.strip() not in out]
    return out


def default_presets() -> str:
    """What a bare `python app.py` serves: on a Hugging Face Space (the README's front matter) the three real
    presets, elsewhere sd15."""
    return "sd15,sdxl,sd3" if os.environ.get("SPACE_ID") else "sd15"


def at_least(low: float, kind=int):
    """An argparse type: a number of `kind` not below `low`."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}")
        if not value >= low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        return value
    return parse


def _layouts(text: str) -> tuple[str, ...]:
    """--warm-regions: comma-separated region layouts, each known, none twice."""
    known = [value for _, value in REGION_CHOICES]
    layouts = tuple(part.strip() for part in text.split(",") if part.strip())
    if not layouts or any(layout not in known for layout in layouts) or len(set(layouts)) != len(layouts):
        raise argparse.ArgumentTypeError(f"expected region layouts from {', '.join(known)}, each once; "
                                         f"got {text!r}")
    return layouts


def parse_args(argv=None, environ=None):
    """The command line (and SEMANTICDRAW_AUTH from `environ`, default os.environ). A malformed login setting stops
    here with one line (auth.AuthError, a SystemExit), before any model is loaded."""
    p = argparse.ArgumentParser(description="SemanticDraw: region-based text-to-image, live.")
    p.add_argument("--preset", action="append", default=[],
                   help="one or several (comma-separated or repeated) of sd15, sd15-hyper, sdxl, sd3, tiny-sd15, "
                        "tiny-sdxl, tiny-sd3; all stay loaded and the page has a model selector (default: sd15; "
                        "on a Space sd15,sdxl,sd3)")
    p.add_argument("--model", action="append", default=[],
                   help="hub id, diffusers folder or .safetensors of an SD1.5 / SDXL / SD3 model (several: "
                        "comma-separated or repeated; served next to the presets)")
    p.add_argument("--lora", action="append", default=[], help="LoRA id or path (repeatable; with --model)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="the library's fast path: every model's network through torch.compile (CUDA graphs on a "
                        "GPU), the starter shapes warmed in the background after launch; a new canvas size "
                        "compiles when first used (about a minute on a GPU). Default: on when serving on CUDA, off "
                        "on a CPU; on a ZeroGPU Space ahead-of-time compilation at start instead")
    p.add_argument("--compile-cache", default=None, metavar="DIR",
                   help="with --compile: keep the compile cache in DIR, so the next start is warm")
    p.add_argument("--compile-shapes", choices=COMPILE_SHAPES, default=COMPILE_SHAPES[0],
                   help="with --compile: one graph for every batch size of a canvas, so a new brush count compiles "
                        "nothing (dynamic, default), or one graph per batch shape (static)")
    p.add_argument("--compile-ahead", action="store_true",
                   help="with --compile-cache, not on ZeroGPU: before the page opens, compile every model's starter "
                        "shapes ahead of time into the cache folder (minutes, once); a restart loads them in "
                        "seconds and traces nothing")
    p.add_argument("--warm-regions", default="latent,attention", type=_layouts, metavar="LAYOUTS",
                   help="with the fast path: the region layouts prepared at start, in order (comma-separated; "
                        "on ZeroGPU each is one GPU task per model before the page opens)")
    p.add_argument("--device", help="cuda, cuda:1, mps, cpu (default: best available; cuda on ZeroGPU)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], help="default: the preset's")
    p.add_argument("--height", type=int, default=None, help="starting canvas height (default: the model's size)")
    p.add_argument("--width", type=int, default=None, help="starting canvas width")
    p.add_argument("--max-canvas", type=int, default=AppConfig.max_canvas, help="largest canvas side (one-shot)")
    p.add_argument("--max-stream-side", type=int, default=AppConfig.max_stream_side,
                   help="largest canvas side for the stream")
    p.add_argument("--max-brushes", type=at_least(1), default=AppConfig.max_brushes,
                   help=f"brushes per palette, on the page and the API (default {AppConfig.max_brushes}); prompts "
                        f"hold at most {MAX_PROMPT_CHARS} characters")
    p.add_argument("--stream-time-limit", type=float, default=None,
                   help=f"seconds per stream run, 0 for none (default {AppConfig.stream_time_limit:g}; 60 on "
                        "ZeroGPU, whose tasks may hold the GPU for at most 300 s)")
    p.add_argument("--max-streams", type=int, default=AppConfig.max_streams, help="streams running at once")
    p.add_argument("--max-generations", type=int, default=AppConfig.max_generations,
                   help="one-shot generations running at once")
    p.add_argument("--max-queue", type=at_least(1), default=AppConfig.queue_size,
                   help=f"requests waiting in the queue, all users together (Gradio's queue max_size; default "
                        f"{AppConfig.queue_size}); beyond it a new request is refused at once ('Queue is full'); "
                        "--max-streams and --max-generations bound the work running at once")
    p.add_argument("--max-per-user", type=at_least(0), default=None,
                   help="streams and generations one visitor (login name, else network address) may run at once, "
                        "all tabs and API clients together; 0 for no bound (default: 3 on a Hugging Face Space, "
                        "else 0)")
    p.add_argument("--forwarded-hops", type=at_least(0), default=None,
                   help="trusted proxies in front of the server: the visitor's address is read from the right of "
                        "X-Forwarded-For, this many entries in (default: 1 on a Hugging Face Space, else 0: the "
                        "socket's address)")
    p.add_argument("--share-calls", action=argparse.BooleanOptionalAction, default=True,
                   help="frames of several users that wait for the GPU at the same time go through the network as "
                        "one call (an eager network's small batches cost about as much as larger ones); compiled "
                        "networks are not joined (default: on)")
    p.add_argument("--max-upload-mb", type=at_least(0.001, float), default=AppConfig.max_upload_mb,
                   help=f"largest uploaded file in MiB: palette .zip, mask, photo, each canvas image (default "
                        f"{AppConfig.max_upload_mb:g}; enough for a 4096 px canvas)")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--host", default=None, help="server name, e.g. 0.0.0.0")
    p.add_argument("--share", action="store_true")
    p.add_argument("--auth", metavar="USER:PASSWORD[,...]",
                   help=f"require a login (several pairs comma-separated). The command line is visible to other "
                        f"users of the machine (ps): prefer {AUTH_ENV}=user:password in the environment or "
                        "--auth-file")
    p.add_argument("--auth-file", metavar="PATH",
                   help="require a login: one user:password a line (# comments); adds to --auth and " + AUTH_ENV)
    args = p.parse_args(argv)
    if args.compile_ahead and not args.compile_cache:
        p.error("--compile-ahead keeps its programs in the compile cache folder: give --compile-cache DIR too")
    args.auth_pairs = auth_pairs(args.auth, args.auth_file, environ)
    args.preset, args.model = names(args.preset), names(args.model)
    if not args.preset and not args.model:
        args.preset = names([default_presets()])
    if args.stream_time_limit is None:
        args.stream_time_limit = 60.0 if ON_ZERO_GPU else AppConfig.stream_time_limit
    on_space = bool((environ if environ is not None else os.environ).get("SPACE_ID"))
    if args.max_per_user is None:
        args.max_per_user = 3 if on_space else AppConfig.max_per_user
    if args.forwarded_hops is None:
        args.forwarded_hops = 1 if on_space else AppConfig.forwarded_hops
    return args


def main(argv=None):
    logging.basicConfig(level=logging.INFO)
    args = parse_args(argv)
    device = args.device or ("cuda" if ON_ZERO_GPU else None)   # ZeroGPU: weights go to CUDA at start
    mode = fastpath.choose(args.compile, device, ON_ZERO_GPU, spaces_module())
    fast = dict(compile=True, compile_cache=args.compile_cache, compile_shapes=args.compile_shapes) \
        if mode == "jit" else {}
    try:
        models = load_models(args.preset, args.model, loras=args.lora, device=device, dtype=args.dtype,
                             share_calls=args.share_calls, **fast)
    except SemanticDrawError as e:
        raise SystemExit(f"Cannot load the model: {e}")
    report = memory_report(models)
    log.info("resident models:\n%s", report)
    print(f"Serving {len(models)} model(s), all resident:\n{report}", flush=True)
    size = models.start_size()
    demo = create_demo(models.by_name, height=args.height or size, width=args.width or size,
                       max_canvas=args.max_canvas, max_stream_side=args.max_stream_side,
                       max_brushes=args.max_brushes, stream_time_limit=args.stream_time_limit,
                       max_streams=args.max_streams, max_generations=args.max_generations,
                       max_per_user=args.max_per_user, forwarded_hops=args.forwarded_hops,
                       queue_size=args.max_queue, max_upload_mb=args.max_upload_mb)
    if args.compile_ahead and mode != "aoti":
        print("Compiling ahead of time (or loading the programs from the cache folder)...", flush=True)
        for name, what in fastpath.compile_ahead(models, args.compile_cache, args.warm_regions).items():
            print(f"  {name}: {what}", flush=True)
    fastpath.prepare(models, mode, spaces_module=spaces_module(), gpu=GPU, layouts=args.warm_regions)
    if mode:
        print(f"Fast path: {'torch.compile, warming in the background' if mode == 'jit' else 'compiled ahead of time'}",
              flush=True)
    launch(demo, server_name=args.host, server_port=args.port, share=args.share, auth=args.auth_pairs)


if __name__ == "__main__":
    main()
