"""Palette files: a folder or `.zip` holding `scene.json` plus RGBA PNG masks (alpha = mask) and an optional
background image, and the scene.json <-> dict mapping.

`Scene.load` / `Scene.save` / `Scene.to_dict` / `Scene.from_dict` (scene.py) hand over to `load` / `save` /
`to_dict` / `from_dict` here. Reading refuses names that point outside the palette and zips that unpack to more than
MAX_PALETTE_BYTES. No torch, diffusers or gradio here.
"""

from __future__ import annotations

import copy
import io
import json
import os
import posixpath
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import ResourceError, SceneError, SemanticDrawError
from .scene import MAX_SIDE, Background, Layer, Scene, _label, _open_image, palette_colors

MAX_PALETTE_BYTES = 512 * 1024 ** 2  # cap on the uncompressed size of a palette .zip
PALETTE_FORMAT = "semantic-draw-palette/1"
_KNOWN_KEYS = {"format", "name", "height", "width", "negative_prompt", "background", "layers"}


# ---------------------------------------------------------------- scene.json <-> dict

def to_dict(scene: Scene) -> dict:
    """The scene as in scene.json: JSON-able, masks named `mask_<i>.png`, background image `background.png`."""
    d = {k: v for k, v in copy.deepcopy(scene.extra).items() if k not in _KNOWN_KEYS}
    background = scene.background if scene.background is not None else Background()
    return {
        "format": PALETTE_FORMAT, "name": scene.name, "height": scene.height, "width": scene.width,
        "negative_prompt": scene.negative_prompt,
        "background": {"prompt": background.prompt, "negative_prompt": background.negative_prompt,
                       "image": None if background.image is None else "background.png"},
        "layers": [{"name": layer.name or f"Brush {i}", "prompt": layer.prompt,
                    "negative_prompt": layer.negative_prompt,
                    "mask": None if layer.mask is None else f"mask_{i}.png",
                    "mask_strength": layer.mask_strength, "mask_blur": layer.mask_blur,
                    "prompt_strength": layer.prompt_strength}
                   for i, layer in enumerate(scene.layers, start=1)],
        **d,
    }


def from_dict(d: dict, base: str | os.PathLike | None = None) -> Scene:
    """A scene (not yet validated) from a scene.json dict. With `base` (a palette folder), mask and background
    file names are read from inside it; without, they stay as they are (paths, arrays or images)."""
    files = None if base is None else _FolderFiles(Path(base))
    return _scene_from_dict(d, files)


def _scene_from_dict(d: Any, files: _FolderFiles | _ZipFiles | None) -> Scene:
    if not isinstance(d, dict):
        raise SceneError(f"scene.json must hold a JSON object, got {type(d).__name__}.")
    fmt = d.get("format", PALETTE_FORMAT)
    if fmt != PALETTE_FORMAT:
        raise SceneError(f"unknown palette format {fmt!r}; this version reads {PALETTE_FORMAT!r}.")
    for key in ("height", "width"):
        if key not in d:
            raise SceneError(f"scene.json has no {key!r}.")
    layers = d.get("layers", [])
    if not isinstance(layers, list):
        raise SceneError(f"'layers' must be a list, got {type(layers).__name__}.")
    background = d.get("background") or {}
    if not isinstance(background, dict):
        raise SceneError(f"'background' must be an object, got {type(background).__name__}.")

    def picture(value: Any, what: str) -> Any:
        return files.image(value, what) if files is not None and value is not None else value

    defaults, scene_layers = Layer(prompt=""), []
    for i, spec in enumerate(layers, start=1):
        if not isinstance(spec, dict):
            raise SceneError(f"Brush {i} must be an object, got {type(spec).__name__}.")
        label = _label(spec.get("name"), i)
        scene_layers.append(Layer(
            prompt=spec.get("prompt", ""), mask=picture(spec.get("mask"), f"{label}: the mask"),
            name=spec.get("name", ""), negative_prompt=spec.get("negative_prompt"),
            mask_strength=spec.get("mask_strength", defaults.mask_strength),
            mask_blur=spec.get("mask_blur", defaults.mask_blur),
            prompt_strength=spec.get("prompt_strength", defaults.prompt_strength)))
    return Scene(
        height=d["height"], width=d["width"], layers=scene_layers,
        background=Background(prompt=background.get("prompt", ""),
                              negative_prompt=background.get("negative_prompt"),
                              image=picture(background.get("image"), "The background image")),
        negative_prompt=d.get("negative_prompt", ""), name=d.get("name", ""),
        extra={k: v for k, v in d.items() if k not in _KNOWN_KEYS})


# ---------------------------------------------------------------- reading

def load(path: str | os.PathLike, max_side: int = MAX_SIDE) -> Scene:
    """Read a palette (folder, .zip, or a scene.json file) and return the validated scene. Errors keep their type
    (SceneError, ResourceError) and get the palette's path in front of their message."""
    path = Path(path)
    try:
        if not path.exists():
            raise SceneError("there is no such file or folder.")
        if path.is_dir():
            return _load_from(_FolderFiles(path), max_side)
        if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            with _ZipFiles(path) as files:
                return _load_from(files, max_side)
        if path.suffix.lower() == ".json":
            return _load_from(_FolderFiles(path.parent, path.name), max_side)
        raise SceneError("a palette is a folder or a .zip file holding scene.json.")
    except SemanticDrawError as e:
        raise type(e)(f"Cannot load palette {str(path)!r}: {e}") from None


def _load_from(files: _FolderFiles | _ZipFiles, max_side: int) -> Scene:
    try:
        d = json.loads(files.scene_json().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SceneError(f"scene.json is not valid JSON ({e}).") from None
    return _scene_from_dict(d, files).validate(max_side=max_side)


def _safe_name(name: Any, what: str) -> str:
    """A relative file name inside the palette; refuses absolute paths and '..'."""
    if not isinstance(name, str) or not name.strip():
        raise SceneError(f"{what} must be a file name, got {name!r}.")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in posix.split("/"):
        raise SceneError(f"{what} {name!r} points outside the palette; use a file inside it.")
    return posixpath.normpath(posix)


class _FolderFiles:
    """Reads a palette folder, or the folder of a scene.json file given by its path."""

    def __init__(self, root: Path, scene_file: str = "scene.json"):
        self.root, self.scene_file = root, scene_file

    def scene_json(self) -> bytes:
        try:
            return (self.root / self.scene_file).read_bytes()
        except FileNotFoundError:
            raise SceneError(f"the folder has no {self.scene_file}.") from None

    def image(self, name: str, what: str) -> Image.Image:
        path = (self.root / _safe_name(name, what)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise SceneError(f"{what} {name!r} points outside the palette; use a file inside it.")
        if not path.exists():
            raise SceneError(f"{what}: the file {name!r} is missing from the palette.")
        return _open_image(path, what)


class _ZipFiles:
    """Reads a palette .zip: scene.json at the top or inside one top-level folder; at most MAX_PALETTE_BYTES."""

    def __init__(self, path: Path):
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise SceneError(f"the .zip file is damaged ({e}).") from None
        infos = self.zip.infolist()
        if sum(info.file_size for info in infos) > MAX_PALETTE_BYTES:
            self.zip.close()
            raise ResourceError(f"the .zip unpacks to more than {MAX_PALETTE_BYTES >> 20} MiB.")
        names = {info.filename for info in infos}
        tops = [n for n in names if n.count("/") == 1 and n.endswith("/scene.json")]
        if "scene.json" in names:
            self.prefix = ""
        elif len(tops) == 1:
            self.prefix = tops[0][: -len("scene.json")]
        else:
            self.zip.close()
            raise SceneError("the .zip holds no scene.json (at the top or in one top-level folder).")
        self.names = names

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def _read(self, name: str) -> bytes:
        # zipfile never returns more than the size declared in the directory (it checks the CRC), so the total
        # checked in __init__ bounds what we unpack.
        try:
            return self.zip.read(self.prefix + name)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as e:
            raise SceneError(f"{name!r} inside the .zip is damaged or unreadable ({e}).") from None

    def scene_json(self) -> bytes:
        return self._read("scene.json")

    def image(self, name: str, what: str) -> Image.Image:
        name = _safe_name(name, what)
        if self.prefix + name not in self.names:
            raise SceneError(f"{what}: the file {name!r} is missing from the palette.")
        return _open_image(self._read(name), what)


# ---------------------------------------------------------------- writing

def save(scene: Scene, path: str | os.PathLike, max_side: int = MAX_SIDE) -> None:
    """Write a palette: a folder, or a .zip if `path` ends with .zip. The scene is validated first."""
    scene = scene.validate(max_side=max_side)
    d = to_dict(scene)
    try:
        text = json.dumps(d, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SceneError(f"The scene's extra fields cannot be written as JSON: {e}.") from None
    files = {"scene.json": text.encode("utf-8")}
    for spec, layer, color in zip(d["layers"], scene.layers, palette_colors(len(scene.layers))):
        files[spec["mask"]] = _mask_png(layer.mask, color)
    if scene.background.image is not None:
        files["background.png"] = _png_bytes(scene.background.image)
    path = Path(path)
    if path.suffix.lower() == ".zip":
        _write_zip(path, files)
    else:
        _write_folder(path, files)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _mask_png(mask: np.ndarray, color: tuple[int, int, int]) -> bytes:
    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[mask] = color + (255,)
    return _png_bytes(Image.fromarray(rgba, "RGBA"))


def _write_zip(path: Path, files: dict[str, bytes]) -> None:
    if path.is_dir():
        raise SceneError(f"Cannot save palette: {str(path)!r} is a folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".zip.tmp")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in files.items():
                z.writestr(name, data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _write_folder(path: Path, files: dict[str, bytes]) -> None:
    if path.exists() and not path.is_dir():
        raise SceneError(f"Cannot save palette: {str(path)!r} is a file, not a folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / "scene.json").exists():
        raise SceneError(f"Cannot save palette: the folder {str(path)!r} is not empty and holds no palette; "
                         "choose a new or empty folder.")
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name != "scene.json":
            (path / name).write_bytes(data)
    (path / "scene.json").write_bytes(files["scene.json"])
