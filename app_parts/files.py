"""Palettes as files: the example folder, uploaded palette files (page and API), fitting them to this server."""
from __future__ import annotations

import logging
from pathlib import Path

from semantic_draw import Scene, SceneError, SemanticDrawError
from semantic_draw.scene import MAX_SIDE
from semantic_draw.sizes import fit

from .limits import check_brushes, check_upload, palette_brush_count, too_many_brushes

log = logging.getLogger("semantic_draw.app")


def load_examples(folder: str | Path) -> list[tuple[str, Path, object]]:
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


def load_palette_file(path, max_bytes: int | None = None, max_side: int = MAX_SIDE) -> Scene:
    """Scene.load for an uploaded file (at most `max_bytes`; a canvas side above `max_side` refused before any image
    is decoded); messages name the file as the user knows it, not its server path."""
    if max_bytes is not None:
        check_upload(path, max_bytes, "The palette file")
    try:
        return Scene.load(path, max_side=max_side)
    except SemanticDrawError as e:
        raise type(e)(str(e).replace(repr(str(path)), repr(Path(path).name))) from None


def api_palette(path, max_side: int, multiple: int, max_brushes: int, max_bytes: int) -> Scene:
    """The scene of a palette file sent to the API, checked against this server's limits: the file's size, its
    brush count (read from scene.json before any mask is decoded), the canvas side, prompt lengths (the library's)."""
    if not path:
        raise SceneError("Send a palette file: a .zip holding scene.json and the brush masks.")
    check_upload(path, max_bytes, "The palette file")
    count = palette_brush_count(path)
    if count is not None and count > max_brushes:
        raise too_many_brushes(count, max_brushes)
    scene = load_palette_file(path, max_side=max_side)
    return check_brushes(scene, max_brushes).validate(max_side=max_side, multiple=multiple)


def fit_scene(scene: Scene, max_side: int, multiple: int) -> tuple[Scene, str | None]:
    """Scale a loaded palette down so that it fits this server's canvas limit (keeping its shape)."""
    h, w = scene.height, scene.width
    if max(h, w) <= max_side and h % multiple == 0 and w % multiple == 0:
        return scene, None
    nh, nw = fit(h, w, multiple, max_side)
    note = (f"The palette is {w}x{h}; it was scaled to {nw}x{nh} to fit this server's canvas limit."
            if max(h, w) > max_side else None)
    return scene.resized(nh, nw), note
