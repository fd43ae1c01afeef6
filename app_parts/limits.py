"""The server's limits on what a visitor sends, checked on every way into the app: the page's handlers, the /generate
and /stream API, palette, mask and photo uploads.

- brushes: at most `--max-brushes` (AppConfig.max_brushes) in a scene; a palette file's brush count is read from its
  scene.json before any of its images is decoded;
- canvas side: at most `--max-canvas` for one-shot generation (and anything the page's editor holds), at most
  `--max-stream-side` for a stream;
- text: prompts at most semantic_draw's MAX_PROMPT_CHARS characters, names MAX_NAME_CHARS, checked before any
  tokenizer sees them;
- uploads: every file at most `--max-upload-mb` MiB (Gradio's `max_file_size` refuses larger uploads before they are
  stored; the handlers check palette and mask files again), the editor's images at most the canvas limit a side and
  at most one layer per brush, read from the image headers before Gradio decodes them.

A refused input is one SemanticDrawError (ResourceError for a limit) with a message for the user; the handlers show
it the way they show every other mistake.
"""
from __future__ import annotations

import inspect
import io
import os
import stat
import zipfile
from pathlib import Path

import gradio as gr
import PIL.Image
from fastapi import HTTPException
from gradio.components.base import server

from semantic_draw import ResourceError, SceneError, SemanticDrawError
from semantic_draw import palette as palette_files
from semantic_draw.options import shown
from semantic_draw.scene import MAX_BRUSHES, MAX_NAME_CHARS, MAX_PROMPT_CHARS, MAX_SIDE, Scene

__all__ = ["BoundedImageEditor", "MAX_NAME_CHARS", "MAX_PROMPT_CHARS", "check_brushes", "check_text_fields",
           "check_upload", "palette_brush_count"]

MIB = 2 ** 20
BLOB_BUDGET = 512 * MIB   # editor images uploaded and waiting for their event, all visitors together


def file_label(path) -> str:
    """How the user knows an uploaded file: its name, never its server path."""
    return f"“{Path(str(path)).name}”"


def check_upload(path, max_bytes: int, what: str = "The file") -> None:
    """An uploaded file is a regular file of at most `max_bytes` bytes, or one SemanticDrawError."""
    try:
        info = os.stat(path)
    except (OSError, ValueError, TypeError):
        raise SceneError(f"{what} {file_label(path)} could not be read; upload it again.") from None
    if not stat.S_ISREG(info.st_mode):
        raise SceneError(f"{what} {file_label(path)} is not a regular file.")
    if info.st_size > max_bytes:
        raise ResourceError(f"{what} {file_label(path)} is {size_text(info.st_size)}; this server takes files up "
                            f"to {size_text(max_bytes)}.")


def size_text(n: int) -> str:
    """1536 -> '1.5 KiB', 64 * 2**20 -> '64 MiB'."""
    value, unit = (n / MIB, "MiB") if n >= MIB else (n / 1024, "KiB")
    return f"{value:.1f}".rstrip("0").rstrip(".") + f" {unit}"


def palette_brush_count(path) -> int | None:
    """The number of brushes a palette .zip declares, read from its scene.json alone (no image is decoded), or None
    when that cannot be told here (not a zip, a damaged one...: loading the palette then says what is wrong)."""
    try:
        with open(path, "rb") as f:   # a regular file: check_upload came first
            if not zipfile.is_zipfile(f):
                return None
            with palette_files._ZipFiles(f) as files:   # the library's safe reader (sizes, encryption, names)
                data = palette_files.parse_json(files.scene_json())
    except (SemanticDrawError, OSError):
        return None
    layers = data.get("layers") if isinstance(data, dict) else None
    return len(layers) if isinstance(layers, list) else None


def too_many_brushes(count: int, max_brushes: int, what: str = "The palette") -> ResourceError:
    return ResourceError(f"{what} has {count} brushes; this server takes at most {max_brushes}. Merge or remove "
                         f"{count - max_brushes} and try again.")


def check_brushes(scene: Scene, max_brushes: int, what: str = "The palette") -> Scene:
    if len(scene.layers) > max_brushes:
        raise too_many_brushes(len(scene.layers), max_brushes, what)
    return scene


def check_text_fields(brushes, background_prompt: str, negative_prompt: str, max_brushes: int) -> None:
    """The page's brush rows and prompts within the limits (cheap: lengths only), before a scene is built from them
    for a running stream."""
    if len(brushes) > max_brushes:
        raise too_many_brushes(len(brushes), max_brushes, "The palette")
    texts = [("The background prompt", background_prompt), ("The negative prompt", negative_prompt)]
    for b in brushes:
        texts += [(f"{b.name[:40]}: the prompt", b.prompt), (f"{b.name[:40]}: the negative prompt",
                                                            b.negative_prompt)]
    for what, text in texts:
        if text is not None and len(str(text)) > MAX_PROMPT_CHARS:
            raise ResourceError(f"{what} has {len(str(text)):,} characters; at most {MAX_PROMPT_CHARS:,} are "
                                "allowed.")
    for b in brushes:
        if len(b.name or "") > MAX_NAME_CHARS:
            raise ResourceError(f"A brush name has {len(b.name):,} characters; at most {MAX_NAME_CHARS} are allowed.")


class BoundedImageEditor(gr.ImageEditor):
    """gr.ImageEditor that refuses, before decoding, an editor value beyond the server's limits: more layers than
    `max_layers` (one per brush) or an image larger than `max_side` a side (the page scales photos to the canvas
    limit in the browser, so only a hand-made request gets there). Gradio decodes the editor's images before any
    handler runs: without this a small PNG of 12,000 x 12,000 pixels per layer would take gigabytes.

    `is_template`: Gradio then draws it with ImageEditor's own front end. Gradio reads a component's props from
    its __init__ signature: the signature below is ImageEditor's plus the two limits (kept as `limits`, so they are
    not sent to the browser)."""
    is_template = True

    def __init__(self, *args, max_side: int = MAX_SIDE, max_layers: int = MAX_BRUSHES, **kwargs):
        self.limits = (int(max_side), int(max_layers))
        super().__init__(*args, **kwargs)

    __init__.__signature__ = inspect.signature(gr.ImageEditor.__init__).replace(parameters=[
        *inspect.signature(gr.ImageEditor.__init__).parameters.values(),
        inspect.Parameter("max_side", inspect.Parameter.KEYWORD_ONLY, default=MAX_SIDE, annotation=int),
        inspect.Parameter("max_layers", inspect.Parameter.KEYWORD_ONLY, default=MAX_BRUSHES, annotation=int)])

    def preprocess(self, payload):
        if payload is None:
            return None
        try:
            data = self.blob_storage.get(payload.id) if payload.id is not None else payload
            layers = len(getattr(data, "layers", None) or [])
            if layers > self.limits[1]:
                raise gr.Error(f"The canvas sent {layers} layers; this server takes at most {self.limits[1]} "
                               "brushes.", print_exception=False)
            return super().preprocess(payload)
        finally:   # a refused value's images go too
            if payload.id is not None:
                self.blob_storage.pop(payload.id, None)

    @server
    def accept_blobs(self, data):
        """The browser's upload of one editor image (Gradio's own, bounded): a layer index beyond the brushes is
        refused (Gradio would grow a list to that index), and the images waiting for their event, all visitors
        together, stay within BLOB_BUDGET bytes (the oldest are dropped first)."""
        index = data.data.get("index")
        if data.data.get("type") == "layer" and index not in (None, "null"):
            try:
                index = int(index)
            except (TypeError, ValueError):
                index = -1
            if not 0 <= index < self.limits[1]:   # only a hand-made request: HTTP 400, no traceback in the log
                raise HTTPException(400, f"The canvas sent layer {shown(data.data.get('index'))}; this server takes "
                                         f"at most {self.limits[1]} brushes.")
        result = super().accept_blobs(data)
        sizes = {key: sum(len(b or b"") for b in [v.background, v.composite, *v.layers])
                 for key, v in self.blob_storage.items()}
        total = sum(sizes.values())
        for key in list(sizes):   # oldest first
            if total <= BLOB_BUDGET:
                break
            if key == data.data.get("id"):
                continue
            self.blob_storage.pop(key, None)
            total -= sizes[key]
        return result

    def convert_and_format_image(self, file, flatten_on_white: bool = False):
        if file is not None:
            try:
                source = file.path if hasattr(file, "path") else io.BytesIO(file)
                with PIL.Image.open(source) as im:   # reads the header only
                    width, height = im.size
            except Exception:
                raise gr.Error("The canvas sent an image that cannot be read; reload the page.",
                               print_exception=False) from None
            if max(width, height) > self.limits[0]:
                raise gr.Error(f"The canvas sent an image of {width}x{height} pixels; this server takes canvases up to "
                               f"{self.limits[0]} px a side.", print_exception=False)
        return super().convert_and_format_image(file, flatten_on_white=flatten_on_white)
