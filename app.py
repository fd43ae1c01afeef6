"""SemanticDraw: paint with semantic brushes and watch a diffusion model turn the painting into an image, live.

    python app.py --preset sd15                    # or sd15-hyper, sdxl, sd3, tiny-sd15 (offline, CPU-friendly)
    python app.py --model <hub id or path> --lora <id or path> --height 768 --width 768

This file draws the page, one builder per section from top to bottom, and wires its events; what the events do lives
in app_parts/ (palette_actions, generation, streaming), and all generation logic in `semantic_draw`.
`create_demo(model, **config)` builds the page around an already loaded model (tests launch it in-process).
"""
from __future__ import annotations

import argparse
import logging
import random
from dataclasses import replace

import gradio as gr

from semantic_draw import SemanticDraw, SemanticDrawError
from semantic_draw.scene import palette_colors

from app_parts import canvas as cv
from app_parts.config import METHOD_CHOICES, REGION_CHOICES, START, AppConfig
from app_parts.files import load_examples
from app_parts.frontend import SET_NAMES, hex_colors, page_css, page_script, swatch
from app_parts.generation import Generation
from app_parts.page import Page
from app_parts.palette import STARTER, STARTER_BACKGROUND, STARTER_NEGATIVE, Brush, default_name
from app_parts.palette_actions import PaletteActions
from app_parts.session import SessionState, close_session
from app_parts.streaming import Streaming
from app_parts.work import make_workers, stream_slots

__all__ = ["AppConfig", "create_demo", "launch", "main"]


def create_demo(model: SemanticDraw, **config) -> gr.Blocks:
    """The page around one loaded model. Keyword arguments: any AppConfig field."""
    cfg = AppConfig(**config)
    multiple = int(model.size_multiple)
    cfg.fit_canvas_size(multiple)
    colors = palette_colors(cfg.max_brushes)
    starter = [replace(b) for b in STARTER[:cfg.max_brushes]]
    examples = load_examples(cfg.assets)
    ui = Page(cfg, multiple, colors)

    with gr.Blocks(title=cfg.title, fill_width=True) as demo:
        demo.sd_config = cfg
        demo.sd_launch_style = dict(css=page_css(colors), js=page_script([b.name for b in starter], colors),
                                    theme=gr.themes.Soft())
        session_state(ui, len(starter))
        header(cfg)
        with gr.Row(equal_height=False):
            canvas_column(ui, [b.name for b in starter])
            output_column(ui)
        semantic_palette(ui, starter)
        example_gallery(ui, examples)
        api_components(ui)
        wire_events(ui, model, examples)

    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=1)
    return demo


# ---------------------------------------------------------------- the page, top to bottom
def session_state(ui: Page, brushes: int) -> None:
    """Per-visitor state: the session (stream, history), how many brush rows are in use, the stream run's id."""
    ui.state = gr.State(SessionState(), delete_callback=close_session)
    ui.count = gr.State(brushes)
    ui.token = gr.State(None)


def header(cfg: AppConfig) -> None:
    gr.Markdown(f"# {cfg.title}\nPaint regions on the canvas, one **layer per brush** (pick the layer, then "
                "paint); give each brush a prompt below. **Start stream** and keep painting and typing, or "
                "**Generate** one image of any size.", elem_id="sd-title")


def canvas_column(ui: Page, layer_names: list[str]) -> None:
    """The canvas (one editor layer per brush), its size sliders, Resize canvas and Remove photo."""
    cfg, multiple, colors = ui.cfg, ui.multiple, hex_colors(ui.colors)
    with gr.Column(scale=3, min_width=420):
        brush_size = max(4, min(cfg.height, cfg.width) // 12)
        ui.editor = gr.ImageEditor(
            value=cv.editor_value(cfg.height, cfg.width, [], []), type="numpy", image_mode="RGBA",
            format="png", label="Canvas: one layer per brush (upload a photo to edit it)",
            layers=gr.LayerOptions(allow_additional_layers=False, layers=layer_names),
            brush=gr.Brush(colors=colors, default_color=colors[0], color_mode="defaults", default_size=brush_size),
            eraser=gr.Eraser(default_size=brush_size),
            canvas_size=(cfg.width, cfg.height), transforms=(), sources=("upload", "clipboard"),
            height=560, elem_id="sd-editor")
        with gr.Row():
            ui.canvas_h = gr.Slider(multiple * 4, cfg.max_canvas, value=cfg.height, step=multiple,
                                    label="Canvas height", scale=2, elem_id="sd-canvas-h")
            ui.canvas_w = gr.Slider(multiple * 4, cfg.max_canvas, value=cfg.width, step=multiple,
                                    label="Canvas width", scale=2, elem_id="sd-canvas-w")
            ui.resize_btn = gr.Button("Resize canvas", scale=1, size="sm", elem_id="sd-resize")
            ui.remove_photo_btn = gr.Button("Remove photo", scale=1, size="sm", elem_id="sd-remove-photo")


def output_column(ui: Page) -> None:
    """The output image and its status, Start stream / Generate, seed, one-shot method, limits, history."""
    cfg = ui.cfg
    with gr.Column(scale=2, min_width=360):
        ui.output = gr.Image(label="Output", type="pil", format="png", interactive=False, height=460,
                             elem_id="sd-output", buttons=["download", "fullscreen"])
        ui.status = gr.Markdown("", elem_id="sd-status")
        with gr.Row():
            ui.stream_btn = gr.Button(START, variant="primary", elem_id="sd-stream")
            ui.generate_btn = gr.Button("Generate", variant="secondary", elem_id="sd-generate")
        with gr.Row():
            ui.seed = gr.Number(0, precision=0, label="Seed", minimum=0, maximum=2**31 - 1, scale=3)
            ui.dice = gr.Button("Random", scale=0, min_width=80, elem_id="sd-dice")
        ui.method = gr.Dropdown(METHOD_CHOICES, value="semanticdraw", label="Method (one-shot)")
        ui.regions = gr.Radio(REGION_CHOICES, value="latent", label="Region layout (stream: at the next Start)",
                              elem_id="sd-regions")
        limit_note = (f"Each stream stops after {cfg.stream_time_limit:g} s; start it again to continue."
                      if cfg.stream_time_limit else "")
        gr.Markdown(f"<small>Stream canvases up to {cfg.max_stream_side} px a side; one-shot up to "
                    f"{cfg.max_canvas} px (large canvases are tiled). {limit_note}</small>")
        ui.history = gr.Gallery(label="History", columns=4, height=220, elem_id="sd-history",
                                buttons=["download", "fullscreen"])


def semantic_palette(ui: Page, starter: list[Brush]) -> None:
    """Background and negative prompts, one row per brush slot (shown while in use), add / load / save."""
    gr.Markdown("## Semantic palette")
    with gr.Row():
        ui.bg_prompt = gr.Textbox(STARTER_BACKGROUND, label="Background prompt (everything not painted)",
                                  scale=3, elem_id="sd-bg-prompt")
        ui.neg_prompt = gr.Textbox(STARTER_NEGATIVE, label="Negative prompt (all brushes unless they set one)",
                                   scale=2, elem_id="sd-neg-prompt")
    for i in range(ui.cfg.max_brushes):
        brush_row(ui, i, starter[i] if i < len(starter) else Brush(default_name(i)), visible=i < len(starter))
    with gr.Row():
        ui.add_btn = gr.Button("+ Add brush", elem_id="sd-add")
        ui.load_btn = gr.UploadButton("Load palette (.zip)", file_types=[".zip"], elem_id="sd-load")
        ui.save_btn = gr.Button("Save palette", elem_id="sd-save")
    ui.palette_file = gr.File(label="Palette file", visible=False, elem_id="sd-palette-file")


def brush_row(ui: Page, i: int, b: Brush, visible: bool) -> None:
    """Brush slot i: colour swatch, name, prompts, ✕, and its mask / strength sliders."""
    with gr.Group(visible=visible, elem_classes=["sd-brush"], elem_id=f"sd-brush-{i + 1}") as group:
        with gr.Row(equal_height=True):
            gr.HTML(swatch(ui.colors[i], i), min_width=44, scale=0, padding=False, elem_classes=["sd-swatch-box"])
            name = gr.Textbox(b.name, label="Name", scale=1, min_width=110, max_length=40)
            prompt = gr.Textbox(b.prompt, label="Prompt", scale=4, placeholder="what to draw here")
            negative = gr.Textbox(b.negative_prompt, label="Negative prompt", scale=2,
                                  placeholder="(the palette's)")
            ui.removers.append(gr.Button("✕", scale=0, min_width=44, elem_classes=["sd-remove"], size="sm"))
        with gr.Accordion("Mask alpha, blur, prompt strength", open=False):
            with gr.Row():
                alpha = gr.Slider(0, 1, value=b.mask_strength, step=0.05, label="Mask alpha")
                blur = gr.Slider(0, 64, value=b.mask_blur, step=1, label="Mask blur (px)")
                strength = gr.Slider(0, 1, value=b.prompt_strength, step=0.05, label="Prompt strength")
    ui.row_groups.append(group)
    ui.row_fields.extend([name, prompt, negative, alpha, blur, strength])
    ui.name_boxes.append(name)


def example_gallery(ui: Page, examples: list) -> None:
    gr.Markdown("## Examples: click one to load its brushes, masks and prompts")
    ui.examples = gr.Gallery([(p, n) for n, _, p in examples], columns=min(4, max(1, len(examples))),
                             height=230, allow_preview=False, label="Examples", elem_id="sd-examples",
                             interactive=False, object_fit="contain")


def api_components(ui: Page) -> None:
    """API-only inputs and outputs (gradio_client), hidden: /generate and /stream take a palette file."""
    with gr.Column(visible=False):
        ui.api_palette = gr.File(label="palette", file_types=[".zip"])
        ui.api_seed = gr.Number(0, precision=0, label="seed")
        ui.api_method = gr.Textbox("semanticdraw", label="method: semanticdraw, multidiffusion-fast or multidiffusion")
        ui.api_regions = gr.Textbox("latent", label="regions: latent (one view per brush) or attention")
        ui.api_frames = gr.Number(8, precision=0, label="frames")
        ui.api_image = gr.Image(type="pil", format="png", label="image")
        ui.api_generate_btn = gr.Button()
        ui.api_stream_btn = gr.Button()


# ---------------------------------------------------------------- events
QUICK = dict(api_visibility="undocumented", concurrency_limit=None)   # page-only, no GPU
LIVE_EDIT = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden", trigger_mode="always_last")


def wire_events(ui: Page, model: SemanticDraw, examples: list) -> None:
    ui.slots = stream_slots(ui.cfg.max_streams)
    # With slots, a settled stream gives its GPU slot away, so more runs may be open than compute at once.
    ui.stream_runs = ui.cfg.max_streams if ui.slots is None else max(8, 4 * ui.cfg.max_streams)
    generate_work, stream_work = make_workers(model, stream_duration=int(ui.cfg.stream_time_limit or 600) + 30,
                                              slots=ui.slots)
    gen, live = Generation(ui, generate_work), Streaming(ui, stream_work)
    wire_palette(ui, PaletteActions(ui, examples))
    wire_generate(ui, gen)
    wire_stream(ui, live)
    wire_api(ui, gen, live)


def then_rename(ui: Page, event):
    """The editor's layer names follow the brush names."""
    return event.then(None, ui.name_boxes, None, js=SET_NAMES, api_visibility="private")


def wire_palette(ui: Page, palette: PaletteActions) -> None:
    """Brushes, canvas, files, seed dice: page-only events that need no GPU."""
    reads = ui.palette_reads
    then_rename(ui, ui.add_btn.click(palette.add_brush, reads, ui.palette_outputs, **QUICK))
    for i, remove in enumerate(ui.removers):
        then_rename(ui, remove.click(palette.remover(i), reads, ui.palette_outputs, **QUICK))
    for name in ui.name_boxes:
        name.change(None, ui.name_boxes, None, js=SET_NAMES, api_visibility="private")
    then_rename(ui, ui.resize_btn.click(palette.resize_canvas, {ui.canvas_h, ui.canvas_w, *reads},
                                        ui.palette_outputs, **QUICK))
    then_rename(ui, ui.editor.upload(palette.photo_uploaded, {ui.state, ui.canvas_h, ui.canvas_w, *reads},
                                     ui.palette_outputs, **QUICK))
    then_rename(ui, ui.remove_photo_btn.click(palette.remove_photo, reads, ui.palette_outputs, **QUICK))
    then_rename(ui, ui.examples.select(palette.load_example, None, ui.palette_outputs, **QUICK))
    then_rename(ui, ui.load_btn.upload(palette.load_palette, ui.load_btn, ui.palette_outputs, **QUICK))
    ui.save_btn.click(palette.save_palette, reads, ui.palette_file, **QUICK)
    ui.dice.click(lambda: random.randrange(2**31 - 1), None, ui.seed, queue=False, **QUICK)


def wire_generate(ui: Page, gen: Generation) -> None:
    """One-shot generation."""
    ui.generate_btn.click(gen.generate_ui, {ui.state, ui.seed, ui.method, ui.regions, *ui.palette_reads},
                          [ui.output, ui.history, ui.status], api_visibility="undocumented",
                          concurrency_limit=ui.cfg.max_generations, concurrency_id="generate",
                          show_progress="full")


def wire_stream(ui: Page, live: Streaming) -> None:
    """Start / Stop, then the frames; every edit meanwhile reaches the running stream."""
    ui.stream_btn.click(live.toggle, ui.state, [ui.stream_btn, ui.token], queue=False, **QUICK).then(
        live.stream_ui, {ui.state, ui.token, ui.seed, ui.regions, *ui.palette_reads},
        [ui.output, ui.status, ui.stream_btn], api_visibility="undocumented", concurrency_limit=ui.stream_runs,
        concurrency_id="stream", show_progress="hidden").then(live.sync_button, ui.state, ui.stream_btn, **QUICK)
    ui.editor.change(live.edit_canvas, {ui.state, ui.editor}, None, **LIVE_EDIT)
    gr.on([c.change for c in [ui.count, ui.bg_prompt, ui.neg_prompt] + ui.row_fields], live.edit_fields,
          {ui.state, *ui.palette_inputs}, None, **LIVE_EDIT)
    ui.seed.change(live.edit_seed, [ui.state, ui.seed], None, **LIVE_EDIT)


def wire_api(ui: Page, gen: Generation, live: Streaming) -> None:
    """API: palette file in, image(s) out."""
    cfg = ui.cfg
    ui.api_generate_btn.click(gen.api_generate, [ui.api_palette, ui.api_seed, ui.api_method, ui.api_regions],
                              ui.api_image,
                              api_name="generate", concurrency_limit=cfg.max_generations, concurrency_id="generate")
    ui.api_stream_btn.click(live.api_stream, [ui.api_palette, ui.api_seed, ui.api_frames, ui.api_regions],
                            ui.api_image,
                            api_name="stream", concurrency_limit=ui.stream_runs, concurrency_id="stream")


def launch(demo: gr.Blocks, **kwargs):
    """demo.launch with the page's style and script (Gradio 6 takes them at launch)."""
    return demo.launch(**{**demo.sd_launch_style, **kwargs})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="SemanticDraw: region-based text-to-image, live.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None,
                     help="sd15, sd15-hyper, sdxl, sd3, tiny-sd15, tiny-sdxl, tiny-sd3 (default sd15)")
    src.add_argument("--model", help="hub id, diffusers folder or .safetensors of an SD1.5 / SDXL / SD3 model")
    p.add_argument("--lora", action="append", default=[], help="LoRA id or path (repeatable; with --model)")
    p.add_argument("--device", help="cuda, cuda:1, mps, cpu (default: best available)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], help="default: the preset's")
    p.add_argument("--height", type=int, default=None, help="starting canvas height (default: the model's size)")
    p.add_argument("--width", type=int, default=None, help="starting canvas width")
    p.add_argument("--max-canvas", type=int, default=AppConfig.max_canvas, help="largest canvas side (one-shot)")
    p.add_argument("--max-stream-side", type=int, default=AppConfig.max_stream_side,
                   help="largest canvas side for the stream")
    p.add_argument("--max-brushes", type=int, default=AppConfig.max_brushes)
    p.add_argument("--stream-time-limit", type=float, default=AppConfig.stream_time_limit,
                   help="seconds per stream run, 0 for none (keep it short on shared Spaces)")
    p.add_argument("--max-streams", type=int, default=AppConfig.max_streams, help="streams running at once")
    p.add_argument("--max-generations", type=int, default=AppConfig.max_generations,
                   help="one-shot generations running at once")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--host", default=None, help="server name, e.g. 0.0.0.0")
    p.add_argument("--share", action="store_true")
    p.add_argument("--auth", help="user:password to require a login")
    return p.parse_args(argv)


def main(argv=None):
    logging.basicConfig(level=logging.INFO)
    args = parse_args(argv)
    try:
        model = SemanticDraw.load(args.preset, model=args.model, loras=args.lora, device=args.device,
                                  dtype=args.dtype)
    except SemanticDrawError as e:
        raise SystemExit(f"Cannot load the model: {e}")
    size = args.height or args.width or max(512, model.native_size)
    demo = create_demo(model, height=args.height or size, width=args.width or size, max_canvas=args.max_canvas,
                       max_stream_side=args.max_stream_side, max_brushes=args.max_brushes,
                       stream_time_limit=args.stream_time_limit, max_streams=args.max_streams,
                       max_generations=args.max_generations)
    auth = None
    if args.auth:
        user, _, password = args.auth.partition(":")
        auth = (user, password)
    launch(demo, server_name=args.host, server_port=args.port, share=args.share, auth=auth)


if __name__ == "__main__":
    main()
