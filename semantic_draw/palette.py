"""Palette files: a folder or `.zip` holding `scene.json` plus RGBA PNG masks (alpha = mask) and an optional
background image, and the scene.json <-> dict mapping.

`Scene.load` / `Scene.save` / `Scene.to_dict` / `Scene.from_dict` (scene.py) hand over to `load` / `save` /
`to_dict` / `from_dict` here. Reading refuses names that point outside the palette, special files (pipes, devices,
link loops: scene.py's `read_file`), encrypted zip members, zips that unpack to more than MAX_PALETTE_BYTES and, before
any image is decoded, scenes beyond scene.py's limits (canvas, brushes, work); each image file is decoded once, however
many brushes name it. Writing replaces files instead of writing through links. No torch, diffusers or gradio here.
"""

from __future__ import annotations

import copy
import io
import json
import os
import posixpath
import stat
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import ResourceError, SceneError, SemanticDrawError
from .options import shown
from .scene import (MAX_IMAGE_FILE_BYTES, MAX_JSON_DEPTH, MAX_JSON_ITEMS, MAX_SIDE, Background, DecodeBudget, Layer,
                    Scene, _label, _open_image, _unreadable, check_json_shape, check_path, check_scene_size,
                    open_file, palette_colors, read_file)

MAX_PALETTE_BYTES = 512 * 1024 ** 2  # cap on the uncompressed size of a palette .zip
MAX_SCENE_JSON_BYTES = 8 * 2 ** 20   # scene.json, a file or a zip member (64 brushes of 4,096-character prompts fit)
MAX_ZIP_MEMBERS = 4096               # entries of a palette .zip
MAX_ZIP_DIRECTORY_BYTES = 4 * 2 ** 20  # its central directory, checked before zipfile reads it
PALETTE_FORMAT = "semantic-draw-palette/1"
_KNOWN_KEYS = {"format", "name", "height", "width", "negative_prompt", "background", "layers"}


# ---------------------------------------------------------------- scene.json <-> dict

def to_dict(scene: Scene) -> dict:
    """The scene as in scene.json: JSON-able, masks named `mask_<i>.png`, background image `background.png`."""
    check_json_shape(scene.extra, "The scene's extra")
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
    files = None if base is None else _FolderFiles(Path(check_path(base, "The palette folder")))
    return _scene_from_dict(d, files)


def _scene_from_dict(d: Any, files: _Files | None, max_side: int = MAX_SIDE) -> Scene:
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
    if files is not None:   # before any image file is read: the canvas, the brush count and the work
        check_scene_size(d["height"], d["width"], len(layers), max_side)

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
    where = shown(os.fspath(path) if isinstance(path, (str, os.PathLike)) else path, 300)
    try:
        name = check_path(path, "The palette")
        try:
            info = os.stat(name)
        except (FileNotFoundError, NotADirectoryError):
            raise SceneError("there is no such file or folder.") from None
        except (OSError, ValueError) as err:
            raise _unreadable(name, "The palette", err, "a palette") from None
        if stat.S_ISDIR(info.st_mode):
            return _load_from(_FolderFiles(Path(name)), max_side)
        if not stat.S_ISREG(info.st_mode):
            raise SceneError("it is not a regular file (a pipe, a device or a socket); a palette is a folder or a "
                             ".zip file holding scene.json.")
        with open_file(name, sys.maxsize, "The palette") as f:
            if Path(name).suffix.lower() == ".zip" or zipfile.is_zipfile(f):
                with _ZipFiles(f) as files:
                    return _load_from(files, max_side)
        if Path(name).suffix.lower() == ".json":
            return _load_from(_FolderFiles(Path(name).parent, Path(name).name), max_side)
        raise SceneError("a palette is a folder or a .zip file holding scene.json.")
    except SemanticDrawError as e:
        raise type(e)(f"Cannot load palette {where}: {e}") from None


def _load_from(files: _Files, max_side: int) -> Scene:
    return _scene_from_dict(parse_json(files.scene_json()), files, max_side).validate(max_side=max_side)


def parse_json(data: bytes, what: str = "scene.json") -> Any:
    """The value of a JSON text, or one SemanticDrawError: not UTF-8 or not JSON (SceneError), nested too deep or
    too many values (ResourceError: see scene.check_json_shape)."""
    if data.count(b"[") + data.count(b"{") > MAX_JSON_ITEMS:   # before parsing: millions of "[]" are slow to parse
        raise ResourceError(f"{what} holds more than {MAX_JSON_ITEMS:,} values.")
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ResourceError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SceneError(f"{what} is not valid JSON ({e}).") from None
    except ValueError:   # an integer of thousands of digits
        raise SceneError(f"{what} holds a number with more digits than any field can take.") from None
    check_json_shape(value, what)
    return value


def _safe_name(name: Any, what: str) -> str:
    """A relative file name inside the palette; refuses absolute paths, '..', NUL and overlong names."""
    if not isinstance(name, str) or not name.strip():
        raise SceneError(f"{what} must be a file name, got {shown(name)}.")
    posix = check_path(name, what).replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in posix.split("/"):
        raise SceneError(f"{what} {shown(name, 300)} points outside the palette; use a file inside it.")
    return posixpath.normpath(posix)


class _Files:
    """What both palette readers share: safe names, and each image file decoded once within one budget
    (scene.MAX_DECODED_PIXELS), however many brushes name it."""

    def __init__(self):
        self.budget = DecodeBudget()
        self._images: dict[str, Image.Image] = {}

    def image(self, name: Any, what: str) -> Image.Image:
        key = _safe_name(name, what)
        if key not in self._images:
            self._images[key] = _open_image(self._image_source(key, name, what), what, self.budget)
        return self._images[key]

    def _image_source(self, key: str, name: str, what: str) -> str | bytes:
        raise NotImplementedError


class _FolderFiles(_Files):
    """Reads a palette folder, or the folder of a scene.json file given by its path."""

    def __init__(self, root: Path, scene_file: str = "scene.json"):
        super().__init__()
        self.root, self.scene_file = root, scene_file

    def scene_json(self) -> bytes:
        path = self.root / self.scene_file
        if not os.path.lexists(path):
            raise SceneError(f"the folder has no {self.scene_file}.")
        return read_file(path, MAX_SCENE_JSON_BYTES, self.scene_file, "a JSON file")

    def _image_source(self, key: str, name: str, what: str) -> str:
        path = os.path.join(self.root, key)
        try:
            root = os.path.realpath(self.root)
            inside = os.path.commonpath([root, os.path.realpath(path)]) == root
        except ValueError:   # a name the file system cannot encode
            raise SceneError(f"{what}: {shown(name, 300)} is not a valid file name.") from None
        if not inside:
            raise SceneError(f"{what} {shown(name, 300)} points outside the palette; use a file inside it.")
        if not os.path.lexists(path):
            raise SceneError(f"{what}: the file {shown(name, 300)} is missing from the palette.")
        return path


class _ZipFiles(_Files):
    """Reads a palette .zip (an open file): scene.json at the top or inside one top-level folder; at most
    MAX_ZIP_MEMBERS entries and MAX_PALETTE_BYTES unpacked; encrypted members are refused."""

    def __init__(self, file):
        super().__init__()
        _check_zip_directory(file)
        try:
            self.zip = zipfile.ZipFile(file)
            infos = self.zip.infolist()
        except MemoryError:
            raise ResourceError("the .zip's directory is too large to read.") from None
        except Exception as e:   # BadZipFile, OSError, EOFError, ValueError...: what a damaged zip makes zipfile raise
            raise SceneError(f"the .zip file is damaged ({shown(str(e), 200)}).") from None
        if len(infos) > MAX_ZIP_MEMBERS:
            self.zip.close()
            raise ResourceError(f"the .zip holds {len(infos)} files; a palette holds at most {MAX_ZIP_MEMBERS}.")
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

    def _read(self, name: str, limit: int) -> bytes:
        info = self.zip.getinfo(self.prefix + name)
        if info.flag_bits & 0x1:
            raise SceneError(f"{name!r} inside the .zip is encrypted; a palette cannot be password-protected. Zip "
                             "its files again without a password.")
        if info.file_size > limit:
            raise ResourceError(f"{name!r} inside the .zip unpacks to {info.file_size / 2 ** 20:.1f} MiB, more than "
                                f"the {limit / 2 ** 20:.0f} MiB allowed.")
        # zipfile never returns more than the size declared in the directory (it checks the CRC), so the sizes
        # checked here and in __init__ bound what we unpack.
        try:
            return self.zip.read(info)
        except MemoryError:
            raise ResourceError(f"{name!r} inside the .zip is too large to unpack in the memory left.") from None
        except Exception as e:   # BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError...
            raise SceneError(f"{name!r} inside the .zip is damaged or unreadable ({shown(str(e), 200)}).") from None

    def scene_json(self) -> bytes:
        return self._read("scene.json", MAX_SCENE_JSON_BYTES)

    def _image_source(self, key: str, name: str, what: str) -> bytes:
        if self.prefix + key not in self.names:
            raise SceneError(f"{what}: the file {shown(name, 300)} is missing from the palette.")
        return self._read(key, MAX_IMAGE_FILE_BYTES)


def _check_zip_directory(file) -> None:
    """Refuses a zip whose central directory (what zipfile reads whole when it opens one) is beyond the limits,
    from its end record alone."""
    try:
        end = zipfile._EndRecData(file)   # (no public API reads the end record alone)
    except Exception:
        return                            # zipfile itself will say the file is damaged
    if end is None:
        return
    if end[zipfile._ECD_ENTRIES_TOTAL] > MAX_ZIP_MEMBERS or end[zipfile._ECD_SIZE] > MAX_ZIP_DIRECTORY_BYTES:
        raise ResourceError(f"the .zip holds {end[zipfile._ECD_ENTRIES_TOTAL]} files in a directory of "
                            f"{end[zipfile._ECD_SIZE]:,} bytes; a palette holds at most {MAX_ZIP_MEMBERS} files.")


# ---------------------------------------------------------------- writing

def save(scene: Scene, path: str | os.PathLike, max_side: int = MAX_SIDE) -> None:
    """Write a palette: a folder, or a .zip if `path` ends with .zip. The scene is validated first."""
    path = Path(check_path(path, "The palette path"))
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
    try:
        if path.suffix.lower() == ".zip":
            _write_zip(path, files)
        else:
            _write_folder(path, files)
    except OSError as e:   # a read-only folder, a full disk, a link loop...
        raise SceneError(f"Cannot save palette {shown(str(path), 300)}: {e.strerror or e}.") from None


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
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    _replace_file(path, buffer.getvalue())


def _write_folder(path: Path, files: dict[str, bytes]) -> None:
    if path.exists() and not path.is_dir():
        raise SceneError(f"Cannot save palette: {str(path)!r} is a file, not a folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / "scene.json").exists():
        raise SceneError(f"Cannot save palette: the folder {str(path)!r} is not empty and holds no palette; "
                         "choose a new or empty folder.")
    path.mkdir(parents=True, exist_ok=True)
    for name in [n for n in files if n != "scene.json"] + ["scene.json"]:   # scene.json last
        _replace_file(path / name, files[name])


def _replace_file(path: Path, data: bytes) -> None:
    """Write `data` to a new file that then replaces `path`: a link, pipe or device named `path` is replaced, never
    written through."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)   # mkstemp makes 0600 files
        os.replace(tmp, path)
    except IsADirectoryError:
        os.unlink(tmp)
        raise SceneError(f"Cannot save palette: {str(path)!r} is a folder.") from None
    except BaseException:
        os.unlink(tmp)
        raise
