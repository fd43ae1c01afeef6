"""SemanticDraw: paint with semantic brushes and watch a diffusion model turn the painting into an image, live.

    python app.py --preset sd15                    # or sd15-hyper, sdxl, sd3, tiny-sd15 (offline, CPU-friendly)
    python app.py --model <hub id or path> --lora <id or path> --height 768 --width 768

The page only collects what the user paints and types and hands it to `semantic_draw`; all generation logic lives
there. `create_demo(model, **config)` builds the page around an already loaded model (tests launch it in-process).
"""
from __future__ import annotations

import argparse
import logging
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from semantic_draw import SemanticDraw, SemanticDrawError, Scene
from semantic_draw.scene import palette_colors

from app_parts import canvas as cv
from app_parts.frontend import SET_NAMES, page_css, page_script, swatch
from app_parts.palette import (STARTER, STARTER_BACKGROUND, STARTER_NEGATIVE, Brush,
                               brushes_from_rows, brushes_from_scene, build_scene, default_name, rows_from_brushes,
                               scene_masks)
from app_parts.session import SessionState, close_session, friendly
from app_parts.work import edit_queue, make_workers

log = logging.getLogger("semantic_draw.app")
ROOT = Path(__file__).resolve().parent
START, STOP = "▶ Start stream", "■ Stop stream"
METHOD_CHOICES = [("SemanticDraw", "semanticdraw"),
                  ("MultiDiffusion, few-step (naive baseline)", "multidiffusion-fast"),
                  ("MultiDiffusion, 50 steps (reference, slow)", "multidiffusion")]


@dataclass
class AppConfig:
    height: int = 512                 # starting canvas
    width: int = 512
    max_canvas: int = 2048            # largest canvas side for one-shot generation (tiled)
    max_stream_side: int = 1024       # largest canvas side for the stream
    max_brushes: int = 12
    stream_time_limit: float = 180.0  # seconds per stream run; 0 = no limit
    max_streams: int = 2              # streams running at once (all users)
    max_generations: int = 2          # one-shot generations running at once
    max_stream_frames: int = 500      # most frames one /stream API call may ask for
    history: int = 12                 # results kept per session
    queue_size: int = 64
    assets: str = str(ROOT / "assets")
    title: str = "SemanticDraw"

    def __post_init__(self):
        self.max_brushes = max(1, int(self.max_brushes))
        self.max_canvas = int(self.max_canvas)
        self.max_stream_side = min(int(self.max_stream_side), self.max_canvas)


def load_examples(folder: str | Path, max_side: int) -> list[tuple[str, Path, object]]:
    """(name, palette folder, preview image) of every palette under `folder`, sorted by name."""
    out = []
    for path in sorted(Path(folder).glob("*/scene.json")):
        try:
            scene = Scene.load(path.parent)
            preview = scene.preview()
            preview.thumbnail((320, 320))
            out.append((scene.name or path.parent.name, path.parent, preview))
        except SemanticDrawError as e:
            log.warning("skipping example %s: %s", path.parent, e)
    return out


def load_palette_file(path) -> Scene:
    """Scene.load for an uploaded file; messages name the file as the user knows it, not its server path."""
    try:
        return Scene.load(path)
    except SemanticDrawError as e:
        raise SemanticDrawError(str(e).replace(repr(str(path)), repr(Path(path).name))) from None


def frame_file(folder: Path, n: int, image) -> str:
    """A stream frame as a PNG of its own. Gradio caches a file by its content, atomically; handing it the PIL image
    instead would rewrite one cache file for equal frames while a client may be downloading it."""
    path = folder / f"frame-{n % 4}.png"
    image.save(path)
    return str(path)


def fit_scene(scene: Scene, max_side: int, multiple: int) -> tuple[Scene, str | None]:
    """Scale a loaded palette down so that it fits this server's canvas limit (keeping its shape)."""
    h, w = scene.height, scene.width
    if max(h, w) <= max_side and h % multiple == 0 and w % multiple == 0:
        return scene, None
    s = min(1.0, max_side / max(h, w))
    nh = max(multiple, int(h * s) // multiple * multiple)
    nw = max(multiple, int(w * s) // multiple * multiple)
    note = f"The palette is {w}x{h}; it was scaled to {nw}x{nh} to fit this server's canvas limit." if s < 1 else None
    return scene.resized(nh, nw), note


def create_demo(model: SemanticDraw, **config) -> gr.Blocks:
    """The page around one loaded model. Keyword arguments: any AppConfig field."""
    cfg = AppConfig(**config)
    multiple = int(model.size_multiple)
    cfg.height = max(multiple, cfg.height // multiple * multiple)
    cfg.width = max(multiple, cfg.width // multiple * multiple)
    n_max = cfg.max_brushes
    colors = palette_colors(n_max)
    hex_colors = ["#%02x%02x%02x" % c for c in colors]
    starter = [replace(b) for b in STARTER[:n_max]]
    examples = load_examples(cfg.assets, cfg.max_canvas)
    generate_work, stream_work = make_workers(model, stream_duration=int(cfg.stream_time_limit or 600) + 30)

    with gr.Blocks(title=cfg.title, fill_width=True) as demo:
        demo.sd_config = cfg
        demo.sd_launch_style = dict(css=page_css(colors), js=page_script([b.name for b in starter], colors),
                                    theme=gr.themes.Soft())
        state = gr.State(SessionState(), delete_callback=close_session)
        count = gr.State(len(starter))
        token = gr.State(None)

        gr.Markdown(f"# {cfg.title}\nPaint regions on the canvas, one **layer per brush** (pick the layer, then "
                    "paint); give each brush a prompt below. **Start stream** and keep painting and typing, or "
                    "**Generate** one image of any size.", elem_id="sd-title")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                editor = gr.ImageEditor(
                    value=cv.editor_value(cfg.height, cfg.width, [], []), type="numpy", image_mode="RGBA",
                    format="png", label="Canvas: one layer per brush (upload a photo to edit it)",
                    layers=gr.LayerOptions(allow_additional_layers=False, layers=[b.name for b in starter]),
                    brush=gr.Brush(colors=hex_colors, default_color=hex_colors[0], color_mode="defaults",
                                   default_size=max(4, min(cfg.height, cfg.width) // 12)),
                    eraser=gr.Eraser(default_size=max(4, min(cfg.height, cfg.width) // 12)),
                    canvas_size=(cfg.width, cfg.height), transforms=(), sources=("upload", "clipboard"),
                    height=560, elem_id="sd-editor")
                with gr.Row():
                    canvas_h = gr.Slider(multiple * 4, cfg.max_canvas, value=cfg.height, step=multiple,
                                         label="Canvas height", scale=2)
                    canvas_w = gr.Slider(multiple * 4, cfg.max_canvas, value=cfg.width, step=multiple,
                                         label="Canvas width", scale=2)
                    resize_btn = gr.Button("Resize canvas", scale=1, size="sm")
                    clear_bg_btn = gr.Button("Remove photo", scale=1, size="sm")
            with gr.Column(scale=2, min_width=360):
                output = gr.Image(label="Output", type="pil", format="png", interactive=False, height=460,
                                  elem_id="sd-output", buttons=["download", "fullscreen"])
                status = gr.Markdown("", elem_id="sd-status")
                with gr.Row():
                    stream_btn = gr.Button(START, variant="primary", elem_id="sd-stream")
                    generate_btn = gr.Button("Generate", variant="secondary", elem_id="sd-generate")
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="Seed", minimum=0, maximum=2**31 - 1, scale=3)
                    dice = gr.Button("Random", scale=0, min_width=80, elem_id="sd-dice")
                method = gr.Dropdown(METHOD_CHOICES, value="semanticdraw", label="Method (one-shot)")
                limit_note = (f"Each stream stops after {cfg.stream_time_limit:g} s; start it again to continue."
                              if cfg.stream_time_limit else "")
                gr.Markdown(f"<small>Stream canvases up to {cfg.max_stream_side} px a side; one-shot up to "
                            f"{cfg.max_canvas} px (large canvases are tiled). {limit_note}</small>")
                history = gr.Gallery(label="History", columns=4, height=220, elem_id="sd-history",
                                     buttons=["download", "fullscreen"])

        gr.Markdown("## Semantic palette")
        with gr.Row():
            bg_prompt = gr.Textbox(STARTER_BACKGROUND, label="Background prompt (everything not painted)", scale=3,
                                   elem_id="sd-bg-prompt")
            neg_prompt = gr.Textbox(STARTER_NEGATIVE, label="Negative prompt (all brushes unless they set one)",
                                    scale=2)
        row_groups, row_fields, name_boxes, removers = [], [], [], []
        for i in range(n_max):
            b = starter[i] if i < len(starter) else Brush(default_name(i))
            with gr.Group(visible=i < len(starter), elem_classes=["sd-brush"],
                          elem_id=f"sd-brush-{i + 1}") as group:
                with gr.Row(equal_height=True):
                    gr.HTML(swatch(colors[i], i), min_width=44, scale=0, padding=False, elem_classes=["sd-swatch-box"])
                    name = gr.Textbox(b.name, label="Name", scale=1, min_width=110, max_length=40)
                    prompt = gr.Textbox(b.prompt, label="Prompt", scale=4, placeholder="what to draw here")
                    negative = gr.Textbox(b.negative_prompt, label="Negative prompt", scale=2,
                                          placeholder="(the palette's)")
                    remove = gr.Button("✕", scale=0, min_width=44, elem_classes=["sd-remove"], size="sm")
                with gr.Accordion("Mask alpha, blur, prompt strength", open=False):
                    with gr.Row():
                        alpha = gr.Slider(0, 1, value=b.mask_strength, step=0.05, label="Mask alpha")
                        blur = gr.Slider(0, 64, value=b.mask_blur, step=1, label="Mask blur (px)")
                        strength = gr.Slider(0, 1, value=b.prompt_strength, step=0.05, label="Prompt strength")
            row_groups.append(group)
            row_fields.extend([name, prompt, negative, alpha, blur, strength])
            name_boxes.append(name)
            removers.append(remove)
        with gr.Row():
            add_btn = gr.Button("+ Add brush", elem_id="sd-add")
            load_btn = gr.UploadButton("Load palette (.zip)", file_types=[".zip"], elem_id="sd-load")
            save_btn = gr.Button("Save palette", elem_id="sd-save")
        palette_file = gr.File(label="Palette file", visible=False, elem_id="sd-palette-file")

        gr.Markdown("## Examples: click one to load its brushes, masks and prompts")
        example_gallery = gr.Gallery([(p, n) for n, _, p in examples], columns=min(4, max(1, len(examples))),
                                     height=230, allow_preview=False, label="Examples", elem_id="sd-examples",
                                     interactive=False, object_fit="contain")

        # API-only inputs and outputs (gradio_client): /generate and /stream take a palette file.
        with gr.Column(visible=False):
            api_palette = gr.File(label="palette", file_types=[".zip"])
            api_seed = gr.Number(0, precision=0, label="seed")
            api_method = gr.Textbox("semanticdraw", label="method: semanticdraw, multidiffusion-fast or multidiffusion")
            api_frames = gr.Number(8, precision=0, label="frames")
            api_image = gr.Image(type="pil", format="png", label="image")

        palette_inputs = [count, bg_prompt, neg_prompt] + row_fields

        # ---------------------------------------------------------------- helpers over the page's values
        def page_brushes(data) -> list[Brush]:
            return brushes_from_rows(data[count], [data[c] for c in row_fields])

        def page_scene(data, canvas: cv.Canvas, strict: bool):
            return build_scene(page_brushes(data), canvas, data[bg_prompt], data[neg_prompt],
                               multiple=multiple, strict=strict)

        def page_fields(data) -> tuple:
            """What the palette rows hold: (brushes, background prompt, negative prompt)."""
            return page_brushes(data), data[bg_prompt] or "", data[neg_prompt] or ""

        def read(data) -> cv.Canvas:
            return cv.read_editor(data[editor], (cfg.height, cfg.width))

        def palette_update(brushes: list[Brush], canvas: cv.Canvas, bg=None, neg=None) -> dict:
            """Every output that shows a palette: editor layers, brush rows, counts and prompts."""
            brushes = brushes[:n_max]
            masks = list(canvas.masks[:len(brushes)]) + [None] * max(0, len(brushes) - len(canvas.masks))
            out = {editor: cv.editor_value(canvas.height, canvas.width, masks, colors, canvas.background),
                   count: len(brushes), canvas_h: canvas.height, canvas_w: canvas.width}
            for g_i, group in enumerate(row_groups):
                out[group] = gr.Group(visible=g_i < len(brushes))
            for comp, value in zip(row_fields, rows_from_brushes(brushes, n_max)):
                out[comp] = value
            if bg is not None:
                out[bg_prompt] = bg
            if neg is not None:
                out[neg_prompt] = neg
            return out

        def scene_update(scene: Scene, note: str | None = None) -> dict:
            scene, fit_note = fit_scene(scene, cfg.max_canvas, multiple)
            for msg in (note, fit_note):
                if msg:
                    gr.Info(msg)
            canvas = cv.Canvas(scene.height, scene.width, [m.astype("uint8") * 255 for m in scene_masks(scene)],
                               scene.background.image)
            return palette_update(brushes_from_scene(scene), canvas, scene.background.prompt or "",
                                  scene.negative_prompt or "")

        palette_outputs = [editor, count, canvas_h, canvas_w, bg_prompt, neg_prompt] + row_groups + row_fields

        def then_rename(event):
            return event.then(None, name_boxes, None, js=SET_NAMES, api_visibility="private")

        # ---------------------------------------------------------------- brushes: add, remove, rename
        @friendly
        def add_brush(data):
            brushes = page_brushes(data)
            if len(brushes) >= n_max:
                raise SemanticDrawError(f"This server allows at most {n_max} brushes.")
            brushes.append(Brush(default_name(len(brushes))))
            return palette_update(brushes, read(data))

        then_rename(add_btn.click(add_brush, {editor, *palette_inputs}, palette_outputs,
                                  api_visibility="undocumented", concurrency_limit=None))

        def make_remover(index: int):
            @friendly
            def remove_brush(data):
                brushes = page_brushes(data)
                canvas = read(data)
                if index >= len(brushes):
                    return {}
                del brushes[index]
                if index < len(canvas.masks):
                    del canvas.masks[index]
                return palette_update(brushes, canvas)
            return remove_brush

        for i, remove in enumerate(removers):
            then_rename(remove.click(make_remover(i), {editor, *palette_inputs}, palette_outputs,
                                     api_visibility="undocumented", concurrency_limit=None))
        for name in name_boxes:
            name.change(None, name_boxes, None, js=SET_NAMES, api_visibility="private")

        # ---------------------------------------------------------------- canvas size and photo
        @friendly
        def resize_canvas(data):
            canvas = read(data)
            h, w = int(data[canvas_h]), int(data[canvas_w])
            if max(h, w) > cfg.max_canvas:
                raise SemanticDrawError(f"The canvas may be at most {cfg.max_canvas} px a side.")
            return palette_update(page_brushes(data), cv.resize_canvas(canvas, h, w))

        then_rename(resize_btn.click(resize_canvas, {editor, canvas_h, canvas_w, *palette_inputs},
                                     palette_outputs, api_visibility="undocumented", concurrency_limit=None))

        @friendly
        def remove_photo(data):
            canvas = read(data)
            canvas.background = None
            return palette_update(page_brushes(data), canvas)

        then_rename(clear_bg_btn.click(remove_photo, {editor, *palette_inputs}, palette_outputs,
                                       api_visibility="undocumented", concurrency_limit=None))

        # ---------------------------------------------------------------- palettes: examples, load, save
        @friendly
        def load_example(evt: gr.SelectData):
            name, folder, _ = examples[evt.index]
            return scene_update(Scene.load(folder), f"Loaded the example palette “{name}”.")

        then_rename(example_gallery.select(load_example, None, palette_outputs, api_visibility="undocumented",
                                           concurrency_limit=None))

        @friendly
        def load_palette(path):
            if not path:
                raise SemanticDrawError("No palette file was uploaded.")
            return scene_update(load_palette_file(path), "Palette loaded.")

        then_rename(load_btn.upload(load_palette, load_btn, palette_outputs, api_visibility="undocumented",
                                    concurrency_limit=None))

        @friendly
        def save_palette(data):
            canvas = read(data)
            scene, notes = page_scene(data, canvas, strict=True)
            for note in notes:
                gr.Warning(note)
            out_dir = Path(tempfile.mkdtemp(prefix="palette-"))
            path = out_dir / "semantic-palette.zip"
            scene.save(path)
            return gr.File(str(path), visible=True)

        save_btn.click(save_palette, {editor, *palette_inputs}, palette_file, api_visibility="undocumented",
                       concurrency_limit=None)

        # ---------------------------------------------------------------- seed
        dice.click(lambda: random.randrange(2**31 - 1), None, seed, api_visibility="undocumented",
                   concurrency_limit=None, queue=False)

        # ---------------------------------------------------------------- one-shot generation
        def run_generate(scene: Scene, seed_value, method_value, progress=None):
            """Yields previews, returns the final image (through StopIteration.value)."""
            for item in generate_work(scene, int(seed_value or 0), method_value or "semanticdraw"):
                if item[0] == "preview":
                    _, step, steps, image = item
                    if progress is not None:
                        progress((step + 1) / steps, desc=f"Step {step + 1} of {steps}")
                    yield image
                else:
                    return item[1]
            raise SemanticDrawError("The generation ended without an image.")

        @friendly
        def generate_ui(data, progress=gr.Progress()):
            canvas = read(data)
            scene, notes = page_scene(data, canvas, strict=True)
            scene = scene.validate(max_side=cfg.max_canvas, multiple=multiple)
            for note in notes:
                gr.Warning(note)
            st: SessionState = data[state]
            t0 = time.monotonic()
            label = dict((v, k) for k, v in METHOD_CHOICES).get(data[method], data[method])
            work = run_generate(scene, data[seed], data[method], progress)
            while True:
                try:
                    preview = next(work)
                except StopIteration as done:
                    image = done.value
                    break
                yield {output: preview, status: f"{label}: generating… (seed {int(data[seed] or 0)})"}
            took = time.monotonic() - t0
            gallery = st.add_result(image, f"{label} · seed {int(data[seed] or 0)}", cfg.history)
            yield {output: image, history: gallery,
                   status: f"{label}: {scene.width}x{scene.height} in {took:.1f} s (seed {int(data[seed] or 0)})"}

        generate_btn.click(generate_ui, {state, editor, seed, method, *palette_inputs}, [output, history, status],
                           api_visibility="undocumented", concurrency_limit=cfg.max_generations,
                           concurrency_id="generate", show_progress="full")

        # ---------------------------------------------------------------- stream
        def toggle_stream(st: SessionState):
            if st.streaming:
                st.stop_stream()
                return {stream_btn: gr.Button(START), token: None}
            return {stream_btn: gr.Button(STOP), token: st.start_stream()}

        def fps_of(times: list[float]) -> float:
            return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

        def stream_frames(st: SessionState, run: int, scene: Scene, seed_value, edits, frames: int | None = None):
            """(frame or None, frames per second, frames shown) of one stream run, until stopped or out of time.
            None means "nothing new" (fps 0: the picture settled and the stream waits for an edit); those come at
            most twice a second. With `frames` (the
            API), every computed frame is sent and the run ends after that many."""
            run_dir = Path(tempfile.mkdtemp(prefix="stream-"))
            work = stream_work(scene, int(seed_value or 0), edits, cfg.stream_time_limit or None,
                               every_frame=frames is not None)
            times: list[float] = []
            shown, last_tick = 0, 0.0
            try:
                for kind, payload in work:
                    if st.run != run or not st.streaming:
                        break
                    now = time.monotonic()
                    if kind == "warning":
                        gr.Warning(payload)
                    elif kind == "timeout":
                        gr.Info(f"The stream stopped after its time limit of {payload:g} s. Start it again to "
                                "continue.")
                    elif kind in ("frame", "same"):
                        times.append(now)
                        del times[:-12]
                        if kind == "frame":
                            shown += 1
                            yield frame_file(run_dir, shown, payload), fps_of(times), shown
                            if frames is not None and shown >= frames:
                                break
                    if kind in ("same", "tick") and now - last_tick >= 0.5:
                        last_tick = now
                        yield None, (fps_of(times) if kind == "same" else 0.0), shown
            finally:
                work.close()
                edits.put(("stop", None))
                shutil.rmtree(run_dir, ignore_errors=True)
                if st.run == run:
                    st.streaming = False
                    st.edits = None

        @friendly
        def stream_ui(data):
            st: SessionState = data[state]
            run = data[token]
            if run is None or run != st.run or not st.streaming:
                yield gr.skip()  # the click stopped the stream (a generator that yields nothing clears outputs)
                return
            with st.lock:  # edits made since Start (while this run waited for a free slot) are newer than `data`
                if run != st.run or not st.streaming:
                    return
                try:
                    st.canvas = st.canvas or read(data)
                    st.fields = st.fields or page_fields(data)
                    scene, st.notes = live_scene(st)
                    scene = scene.validate(max_side=cfg.max_stream_side, multiple=multiple)
                except SemanticDrawError as e:
                    st.streaming = False
                    raise SemanticDrawError(f"{e} (The stream takes canvases up to {cfg.max_stream_side} px a "
                                            "side; use Generate for larger ones.)" if "larger than" in str(e)
                                            else str(e))
                st.edits = edits = edit_queue()
            for frame, fps, n in stream_frames(st, run, scene, data[seed], edits):
                notes = "  \n".join(f"⚠ {x}" for x in st.notes)
                text = (f"**Streaming** · {fps:.1f} frames/s · frame {n}" if frame is not None or fps > 0 else
                        f"**Streaming** · frames/s: settled, waiting for your next edit · frame {n}")
                text += f"  \n{notes}" if notes else ""
                yield {output: frame, status: text} if frame is not None else {status: text}
            yield {status: "Stream stopped.", stream_btn: gr.Button(START)}

        def sync_button(st: SessionState):
            return gr.Button(STOP if st.streaming else START)

        stream_event = stream_btn.click(toggle_stream, state, [stream_btn, token], api_visibility="undocumented",
                                        concurrency_limit=None, queue=False)
        stream_event.then(stream_ui, {state, token, editor, seed, *palette_inputs}, [output, status, stream_btn],
                          api_visibility="undocumented", concurrency_limit=cfg.max_streams,
                          concurrency_id="stream", show_progress="hidden"
                          ).then(sync_button, state, stream_btn, api_visibility="undocumented",
                                 concurrency_limit=None)

        # live edits: every change reaches the running stream as a scene update (no restart)
        def live_scene(st: SessionState):
            brushes, bg, neg = st.fields
            return build_scene(brushes, st.canvas, bg, neg, multiple=multiple, strict=False)

        def push_edit(st: SessionState, canvas: cv.Canvas | None = None, fields: tuple | None = None):
            with st.lock:
                if not st.streaming:
                    return
                st.canvas = canvas or st.canvas
                st.fields = fields or st.fields
                if st.edits is None or st.canvas is None or st.fields is None:
                    return  # the run has not started yet; it starts from what was stored here
                try:
                    scene, st.notes = live_scene(st)
                except SemanticDrawError as e:
                    st.notes = [str(e)]
                    return
                st.edits.put(("scene", scene))

        def edit_canvas(data):
            if data[state].streaming:
                push_edit(data[state], canvas=read(data))

        def edit_fields(data):
            if data[state].streaming:
                push_edit(data[state], fields=page_fields(data))

        def edit_seed(st: SessionState, value):
            if st.streaming and st.edits is not None:
                st.edits.put(("seed", int(value or 0)))

        live = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden",
                    trigger_mode="always_last")
        editor.change(edit_canvas, {state, editor}, None, **live)
        gr.on([c.change for c in [count, bg_prompt, neg_prompt] + row_fields], edit_fields,
              {state, *palette_inputs}, None, **live)
        seed.change(edit_seed, [state, seed], None, **live)

        # ---------------------------------------------------------------- API: palette file in, image(s) out
        def api_scene(path, max_side: int) -> Scene:
            if not path:
                raise SemanticDrawError("Send a palette file: a .zip holding scene.json and the brush masks.")
            scene = load_palette_file(path)
            return scene.validate(max_side=max_side, multiple=multiple)

        @friendly
        def api_generate(palette, seed_value, method_value):
            """Generate one image from a palette file (.zip with scene.json and RGBA masks)."""
            work = run_generate(api_scene(palette, cfg.max_canvas), seed_value, method_value)
            while True:
                try:
                    next(work)
                except StopIteration as done:
                    return done.value

        api_generate_btn = gr.Button(visible=False)
        api_generate_btn.click(api_generate, [api_palette, api_seed, api_method], api_image, api_name="generate",
                      concurrency_limit=cfg.max_generations, concurrency_id="generate")

        @friendly
        def api_stream(palette, seed_value, frames):
            """Stream `frames` frames of a palette file (.zip); yields each frame as it comes."""
            frames = int(frames or 0)
            if not 1 <= frames <= cfg.max_stream_frames:
                raise SemanticDrawError(f"Ask for between 1 and {cfg.max_stream_frames} frames, got {frames}.")
            scene = api_scene(palette, cfg.max_stream_side)
            st = SessionState()
            run = st.start_stream()
            for frame, _, _ in stream_frames(st, run, scene, seed_value, edit_queue(), frames=frames):
                yield frame

        api_stream_btn = gr.Button(visible=False)
        api_stream_btn.click(api_stream, [api_palette, api_seed, api_frames], api_image, api_name="stream",
                      concurrency_limit=cfg.max_streams, concurrency_id="stream")

    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=1)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """demo.launch with the page's style and script (Gradio 6 takes them at launch)."""
    return demo.launch(**{**demo.sd_launch_style, **kwargs})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="SemanticDraw: region-based text-to-image, live.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default="sd15",
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
    dtype = None
    if args.dtype:
        import torch
        dtype = getattr(torch, args.dtype)
    try:
        if args.model:
            model = SemanticDraw.from_pretrained(args.model, loras=args.lora, device=args.device, dtype=dtype)
        else:
            if args.lora:
                raise SystemExit("--lora goes with --model (presets bring their own LoRAs).")
            model = SemanticDraw.from_preset(args.preset, device=args.device, dtype=dtype)
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
