"""Scenes as plain data: a canvas, a background and semantic brushes (prompt + painted mask), and their checks.

`Scene.validate()` turns what a user or the app hands in into a normalized scene (bool masks at canvas size,
resolved negative prompts, checked numbers) or raises one `SceneError` that names the bad field (`ResourceError` for
a scene beyond the limits below: canvas, brushes, work, text, image files). Files are read here (`read_file`: checked
with os.stat before they are opened, so a pipe, a device or a link loop is refused and never blocks; read with a size
cap) and image files decoded here (`_open_image`: the header's size is checked before decoding), for masks given as
paths and for palette files alike. `Scene.save` / `Scene.load` / `to_dict` / `from_dict` hand over to palette.py,
which reads and writes palette files. No torch, diffusers or gradio here.
"""

from __future__ import annotations

import colorsys
import copy
import errno
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from .errors import ResourceError, SceneError, SemanticDrawError
from .options import check_number, check_whole, shown
from .sizes import keep_aspect, to_multiple

MAX_SIDE = 8192                      # largest canvas side accepted by validate() unless max_side= says otherwise
MAX_IMAGE_SIDE = 16384               # largest side of an image file we agree to decode (masks, backgrounds)
MAX_IMAGE_PIXELS = 2 ** 27           # largest image (width x height, ~134 Mpx), read from its header before decoding
MAX_DECODED_PIXELS = 2 ** 28         # all image files decoded for one scene or palette together (~268 Mpx, 1 GiB RGBA)
MAX_IMAGE_FILE_BYTES = 256 * 2 ** 20  # largest image file read (bytes)
MAX_BRUSHES = 64                     # brushes (layers) in a scene
MAX_SCENE_WORK = 2 ** 27             # brushes x canvas pixels (~134 M: 2 brushes on 8192 x 8192, 32 on 2048 x 2048)
MAX_PROMPT_CHARS = 4096              # characters of a prompt or negative prompt, checked before any tokenizer sees it
MAX_NAME_CHARS = 256                 # characters of a scene or brush name
MAX_MASK_BLUR = 256.0                # px: larger blurs are refused; a blur beyond the canvas diagonal is capped to it
MAX_JSON_DEPTH = 32                  # nesting of scene.json and of Scene.extra
MAX_JSON_ITEMS = 100_000             # values (lists, objects, numbers, strings) in scene.json and in Scene.extra
MAX_PATH_CHARS = 4096                # characters of a file path; a path holding NUL is refused
ASPECT_TOLERANCE = 0.01              # masks / images within 1 % of the canvas aspect ratio are resized, not refused
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")   # the decoders an image file may use (JPEG: MPO too)


def __getattr__(name: str) -> Any:
    """`PALETTE_FORMAT` lives in palette.py (which imports this module); it is still importable from here."""
    if name == "PALETTE_FORMAT":
        from .palette import PALETTE_FORMAT
        return PALETTE_FORMAT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Hand-picked, well separated colours for the first brushes; golden-angle hues after that.
_BASE_COLORS = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 200, 200),
    (240, 50, 230), (170, 200, 40), (250, 160, 190), (0, 128, 128), (170, 110, 40), (128, 128, 0),
]


def palette_colors(n: int) -> list[tuple[int, int, int]]:
    """`n` distinct RGB colours, one per brush, the same for every call (brush i always gets colour i)."""
    colors = list(_BASE_COLORS[:n])
    for i in range(len(colors), n):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


@dataclass(eq=False)
class Layer:
    """One semantic brush. `mask`: PIL image (alpha if it has one, else non-black), numpy array (bool, or numbers
    where > 0 is painted), an object with `__array__`, or a path to an image file.

    `mask_blur` is refused above MAX_MASK_BLUR px; a blur wider than the canvas diagonal changes nothing more and is
    capped to the diagonal by `Scene.validate`. Prompts hold at most MAX_PROMPT_CHARS characters, names
    MAX_NAME_CHARS."""
    prompt: str
    mask: Any = None
    name: str = ""
    negative_prompt: str | None = None   # None: the scene's negative_prompt
    mask_strength: float = 1.0           # alpha a_p in [0, 1]
    mask_blur: float = 8.0               # Gaussian std in pixels, 0 .. MAX_MASK_BLUR (capped to the canvas diagonal)
    prompt_strength: float = 1.0         # k_p in [0, 1]


@dataclass(eq=False)
class Background:
    """What lies under every brush: a prompt and, for editing / inpainting, an optional image."""
    prompt: str = ""
    negative_prompt: str | None = None   # None: the scene's negative_prompt
    image: Any = None                    # PIL image, path, or numpy RGB (uint8, or float in [0, 1])


@dataclass(eq=False)
class Scene:
    """A canvas of `height` x `width` pixels; `layers` go bottom to top (later layers sit on top).
    `extra` keeps unknown top-level keys of a palette file (e.g. "about", "suggested") so saving keeps them."""
    height: int
    width: int
    layers: list[Layer] = field(default_factory=list)
    background: Background = field(default_factory=Background)
    negative_prompt: str = ""
    name: str = ""
    extra: dict = field(default_factory=dict)

    def validate(self, max_side: int = MAX_SIDE, multiple: int = 8) -> Scene:
        """A new normalized scene, or one SceneError naming the bad field (ResourceError for a scene beyond the
        limits: a side above `max_side`, more than MAX_BRUSHES brushes or MAX_SCENE_WORK brush-pixels, text or
        image files too large). Does not change `self`."""
        if not isinstance(self.layers, (list, tuple)):
            raise SceneError(f"The scene's layers must be a list of Layer, got {type(self.layers).__name__}.")
        height, width = check_scene_size(self.height, self.width, len(self.layers), max_side, multiple)
        negative = _check_text(self.negative_prompt, "The scene's negative_prompt")
        name = _check_text(self.name, "The scene's name", limit=MAX_NAME_CHARS)
        if not isinstance(self.extra, dict):
            raise SceneError(f"The scene's extra must be a dict, got {type(self.extra).__name__}.")
        check_json_shape(self.extra, "The scene's extra")
        budget = DecodeBudget()
        layers = [_validate_layer(layer, i + 1, height, width, negative, budget)
                  for i, layer in enumerate(self.layers)]
        background = _validate_background(self.background, height, width, negative, budget)
        if not layers and not background.prompt.strip() and background.image is None:
            raise SceneError("Nothing to draw: add a brush or a background prompt.")
        return Scene(height, width, layers, background, negative, name, copy.deepcopy(self.extra))

    def resized(self, height: int | None = None, width: int | None = None, *, max_side: int = MAX_SIDE) -> Scene:
        """A validated copy at a new canvas size: masks nearest-resized, background image Lanczos-resized.
        Give one side to keep the aspect ratio (the other is rounded to a multiple of 8); give both to stretch."""
        scene = self.validate(max_side=max_side)
        if height is None and width is None:
            raise SceneError("resized() needs a height, a width or both.")
        height, width = (None if side is None else    # plain ints from here on (not numpy's or torch's)
                         check_whole(side, f"The new {what}", -math.inf, math.inf, error=SceneError)
                         for what, side in (("height", height), ("width", width)))
        height, width = keep_aspect(height, width, (scene.height, scene.width), 8)
        height, width = _check_canvas(height, width, max_side, 8)
        for i, layer in enumerate(scene.layers):
            layer.mask = _resize_nearest(layer.mask, height, width)
            if not layer.mask.any():
                raise SceneError(f"{_label(layer.name, i + 1)} vanishes when the canvas is scaled to "
                                 f"{width}x{height}: its mask is too thin. Use a larger size or a bigger mask.")
        if scene.background.image is not None:
            scene.background.image = scene.background.image.resize((width, height), Image.LANCZOS)
        return replace(scene, height=height, width=width).validate(max_side=max_side)

    def preview(self, opacity: float | None = None) -> Image.Image:
        """An RGB picture of the palette: each brush in its colour over white (or over the background image)."""
        scene = self.validate()
        bg = scene.background.image
        canvas = np.full((scene.height, scene.width, 3), 255.0) if bg is None else np.asarray(bg, np.float64)
        opacity = (0.8 if bg is None else 0.5) if opacity is None else check_number(opacity, "opacity", 0.0, 1.0,
                                                                                      error=SceneError)
        for layer, color in zip(scene.layers, palette_colors(len(scene.layers))):
            canvas[layer.mask] = (1 - opacity) * canvas[layer.mask] + opacity * np.array(color, np.float64)
        return Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8), "RGB")

    # ---- palette files (palette.py) ----

    def to_dict(self) -> dict:
        """The scene as in scene.json: JSON-able, masks named `mask_<i>.png`, background image `background.png`."""
        from . import palette
        return palette.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict, base: str | os.PathLike | None = None) -> Scene:
        """A scene (not yet validated) from a scene.json dict. With `base` (a palette folder), mask and background
        file names are read from inside it; without, they stay as they are (paths, arrays or images)."""
        from . import palette
        return palette.from_dict(d, base)

    @classmethod
    def load(cls, path: str | os.PathLike, max_side: int = MAX_SIDE) -> Scene:
        """Read a palette (folder, .zip, or a scene.json file) and return the validated scene."""
        from . import palette
        return palette.load(path, max_side)

    def save(self, path: str | os.PathLike, max_side: int = MAX_SIDE) -> None:
        """Write a palette: a folder, or a .zip if `path` ends with .zip. The scene is validated first."""
        from . import palette
        palette.save(self, path, max_side)


# ---------------------------------------------------------------- validation

def _label(name: Any, i: int) -> str:
    """How messages name brush i: 'Brush 3' or 'Brush 3 ("sun")' (a long name cut, odd characters escaped)."""
    if isinstance(name, str) and name.strip() and name != f"Brush {i}":
        short = name if len(name) <= 40 else name[:40] + "..."
        return f'Brush {i} ("{short.encode("utf-8", "backslashreplace").decode("utf-8")}")'
    return f"Brush {i}"


def check_scene_size(height: Any, width: Any, brushes: int, max_side: int = MAX_SIDE,
                     multiple: int = 8) -> tuple[int, int]:
    """The canvas sides as ints, checked with the brush count against the limits before any mask is read:
    ResourceError beyond `max_side`, MAX_BRUSHES or MAX_SCENE_WORK (brushes x canvas pixels), SceneError else."""
    max_side = check_whole(max_side, "max_side", 1, math.inf, error=SceneError)
    multiple = check_whole(multiple, "The size multiple", 1, 1024, error=SceneError)
    height, width = _check_canvas(height, width, max_side, multiple)
    if brushes > MAX_BRUSHES:
        raise ResourceError(f"The scene has {brushes} brushes; at most {MAX_BRUSHES} are allowed. Merge or remove "
                            "some.")
    if brushes * height * width > MAX_SCENE_WORK:
        raise ResourceError(f"{brushes} brushes on a {width}x{height} canvas is too much work: brushes x canvas "
                            f"pixels may be at most {MAX_SCENE_WORK / 1e6:.0f} million, here "
                            f"{brushes * height * width / 1e6:.0f} million. Use fewer brushes or a smaller canvas.")
    return height, width


def _check_canvas(height: Any, width: Any, max_side: int, multiple: int) -> tuple[int, int]:
    sides = []
    for what, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise SceneError(f"The canvas {what} must be a whole number of pixels, got {shown(value)}.")
        value = int(value)
        if value <= 0:
            raise SceneError(f"The canvas {what} must be positive, got {shown(value)}.")
        if value > max_side:
            raise ResourceError(f"The canvas {what} {shown(value)} is larger than the maximum of {max_side} pixels.")
        if value % multiple:
            near = to_multiple(value, multiple)
            raise SceneError(f"The canvas {what} must be a multiple of {multiple}, got {value}; try {near}.")
        sides.append(value)
    return sides[0], sides[1]


def _check_text(value: Any, what: str, optional: bool = False, limit: int = MAX_PROMPT_CHARS) -> str | None:
    """Text of at most `limit` characters that can be written as UTF-8 (no lone surrogates), checked before any
    tokenizer or file sees it."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise SceneError(f"{what} must be text, got {type(value).__name__}.")
    if len(value) > limit:
        raise ResourceError(f"{what} is {len(value):,} characters long; at most {limit:,} are allowed. Shorten it.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SceneError(f"{what} holds a character that is not text (a lone surrogate, {value[e.start]!r}, at "
                         f"position {e.start}); remove it.") from None
    return value


def check_json_shape(value: Any, what: str) -> None:
    """Refuses data nested deeper than MAX_JSON_DEPTH or holding more than MAX_JSON_ITEMS values (ResourceError),
    walked without recursion (a cycle counts as too deep)."""
    todo, count = [(value, 1)], 1
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if not children:
            continue
        if depth >= MAX_JSON_DEPTH:
            raise ResourceError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep.")
        count += len(children)
        if count > MAX_JSON_ITEMS:
            raise ResourceError(f"{what} holds more than {MAX_JSON_ITEMS:,} values.")
        todo.extend((child, depth + 1) for child in children)


def _validate_layer(layer: Any, i: int, height: int, width: int, scene_negative: str,
                    budget: DecodeBudget | None = None) -> Layer:
    label = _label(getattr(layer, "name", None), i)
    if not isinstance(layer, Layer):
        raise SceneError(f"{label} must be a Layer, got {type(layer).__name__}.")
    prompt = _check_text(layer.prompt, f"{label}: the prompt")
    if not prompt.strip():
        raise SceneError(f"{label} has no prompt: write what to draw in this region.")
    negative = _check_text(layer.negative_prompt, f"{label}: the negative_prompt", optional=True)
    name = _check_text(layer.name, f"{label}: the name", limit=MAX_NAME_CHARS).strip() or f"Brush {i}"
    mask_strength = check_number(layer.mask_strength, f"{label}: mask_strength", 0.0, 1.0, error=SceneError)
    mask_blur = check_number(layer.mask_blur, f"{label}: mask_blur", 0.0, math.inf, error=SceneError)
    if mask_blur > MAX_MASK_BLUR:
        raise SceneError(f"{label}: mask_blur must be at least 0 and at most {MAX_MASK_BLUR:g} px, got "
                         f"{mask_blur:g}.")
    prompt_strength = check_number(layer.prompt_strength, f"{label}: prompt_strength", 0.0, 1.0, error=SceneError)
    if layer.mask is None:
        raise SceneError(f"{label} has no mask: paint its region.")
    mask = normalize_mask(layer.mask, height, width, f"{label}: the mask", budget)
    if not mask.any():
        raise SceneError(f"{label}: the mask is empty (nothing painted). Paint its region or remove the brush.")
    return Layer(
        prompt=prompt, mask=mask, name=name,
        negative_prompt=scene_negative if negative is None else negative,
        mask_strength=mask_strength,
        mask_blur=min(mask_blur, math.hypot(height, width)),   # a wider blur changes nothing more
        prompt_strength=prompt_strength,
    )


def _validate_background(background: Any, height: int, width: int, scene_negative: str,
                         budget: DecodeBudget | None = None) -> Background:
    if background is None:
        background = Background()
    elif isinstance(background, str):
        background = Background(prompt=background)
    elif not isinstance(background, Background):
        raise SceneError(f"The background must be a Background, got {type(background).__name__}.")
    prompt = _check_text(background.prompt, "The background prompt")
    negative = _check_text(background.negative_prompt, "The background negative_prompt", optional=True)
    image = None
    if background.image is not None:
        image = normalize_image(background.image, height, width, "The background image", budget)
    return Background(prompt, scene_negative if negative is None else negative, image)


def _fit_size(size_hw: tuple[int, int], height: int, width: int, what: str) -> bool:
    """True when an image of `size_hw` must be resized to the canvas; raises when its aspect ratio differs."""
    h, w = size_hw
    if (h, w) == (height, width):
        return False
    if h == 0 or w == 0 or abs((h / w) / (height / width) - 1) > ASPECT_TOLERANCE:
        raise SceneError(f"{what} is {w}x{h} pixels but the canvas is {width}x{height}: the aspect ratios "
                         "differ. Use an image of the canvas size (or the same shape).")
    return True


def _resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


# ---------------------------------------------------------------- files and images

class DecodeBudget:
    """The pixels of the image files decoded for one scene or palette: at most MAX_DECODED_PIXELS together."""

    def __init__(self):
        self.used = 0

    def take(self, pixels: int, what: str) -> None:
        if self.used + pixels > MAX_DECODED_PIXELS:
            raise ResourceError(f"{what}: the image files of this scene add up to more than "
                                f"{MAX_DECODED_PIXELS / 1e6:.0f} megapixels. Use smaller images or fewer of them.")
        self.used += pixels


def check_path(path: Any, what: str, *, error: type = SceneError) -> str:
    """A file path as text: refuses non-paths, NUL characters, paths longer than MAX_PATH_CHARS and names the
    file system cannot encode (one ``error``)."""
    try:
        name = os.fspath(path)
    except TypeError:
        raise error(f"{what} must be a file path (text or os.PathLike), got {type(path).__name__}.") from None
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if "\x00" in name:
        raise error(f"{what}: the file name {shown(name, 300)} holds a NUL character; no file has such a name.")
    if len(name) > MAX_PATH_CHARS:
        raise error(f"{what}: the file name is {len(name):,} characters long, more than the "
                    f"{MAX_PATH_CHARS:,} allowed.")
    try:
        os.fsencode(name)
    except UnicodeEncodeError:       # a lone surrogate, say: the system cannot name a file so
        raise error(f"{what}: the file name {shown(name, 300)} holds characters no file name can have "
                    "here.") from None
    return name


_OS_REASONS = {errno.ELOOP: "a symbolic link loop", errno.ENAMETOOLONG: "the name is too long",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


def _unreadable(name: str, what: str, err: BaseException, kind: str) -> SceneError:
    if isinstance(err, (FileNotFoundError, NotADirectoryError)):
        return SceneError(f"{what}: the file {shown(name, 300)} does not exist.")
    if isinstance(err, IsADirectoryError):
        return SceneError(f"{what}: {shown(name, 300)} is a folder, not {kind}.")
    reason = _OS_REASONS.get(getattr(err, "errno", None)) or getattr(err, "strerror", None) or "not a valid name"
    return SceneError(f"{what}: {shown(name, 300)} cannot be read ({reason}).")


def _check_regular(info: os.stat_result, name: str, what: str, kind: str, limit: int) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise SceneError(f"{what}: {shown(name, 300)} is a folder, not {kind}.")
    if not stat.S_ISREG(info.st_mode):
        raise SceneError(f"{what}: {shown(name, 300)} is not a regular file (a pipe, a device or a socket); use "
                         f"{kind}.")
    if info.st_size > limit:
        raise ResourceError(f"{what}: {shown(name, 300)} is {info.st_size / 2 ** 20:.1f} MiB, more than the "
                            f"{limit / 2 ** 20:.0f} MiB allowed.")


def open_file(path: Any, limit: int, what: str, kind: str = "a file"):
    """A regular file of at most `limit` bytes, open for binary reading, or one SemanticDrawError. The path is
    checked with os.stat before it is opened (pipes, devices, sockets, folders, link loops, NUL or overlong names
    are refused) and opened without blocking, then checked again on the open file: a pipe swapped in meanwhile never
    blocks."""
    name = check_path(path, what)
    try:
        info = os.stat(name)
    except (OSError, ValueError) as err:   # ValueError: a name the file system cannot encode
        raise _unreadable(name, what, err, kind) from None
    _check_regular(info, name, what, kind, limit)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise _unreadable(name, what, err, kind) from None
    f = open(fd, "rb", closefd=True)
    try:
        _check_regular(os.fstat(f.fileno()), name, what, kind, limit)
    except BaseException:
        f.close()
        raise
    return f


def read_file(path: Any, limit: int, what: str, kind: str = "a file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see open_file), or one SemanticDrawError."""
    with open_file(path, limit, what, kind) as f:
        try:
            data = f.read(limit + 1)
        except OSError as err:
            raise _unreadable(check_path(path, what), what, err, kind) from None
    if len(data) > limit:
        raise ResourceError(f"{what}: {shown(check_path(path, what), 300)} is larger than the "
                            f"{limit / 2 ** 20:.0f} MiB allowed.")
    return data


def _open_image(source: Any, what: str, budget: DecodeBudget | None = None) -> Image.Image:
    """Decode an image file (path or bytes) completely, refusing non-images, corrupt and oversized files: its size
    is read from the header and checked (MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS, the budget) before decoding."""
    data = source if isinstance(source, bytes) else read_file(source, MAX_IMAGE_FILE_BYTES, what, "an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.init()   # registers every decoder IMAGE_FORMATS names (once)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            if max(image.size) > MAX_IMAGE_SIDE:
                raise ResourceError(f"{what} is {image.width}x{image.height} pixels, larger than "
                                    f"{MAX_IMAGE_SIDE} on a side.")
            _check_pixels(image.width, image.height, what)
            if budget is not None:
                budget.take(image.width * image.height, what)
            image.load()
        return image
    except SemanticDrawError:  # the size checks above: a ValueError, not a damaged file
        raise
    except Image.DecompressionBombError:
        raise ResourceError(f"{what} is too large to open.") from None
    except Image.UnidentifiedImageError:
        raise SceneError(f"{what} is not an image file (PNG, JPEG, WebP...).") from None
    except MemoryError:
        raise ResourceError(f"{what} is too large to decode in the memory left.") from None
    except Exception as e:  # OSError, SyntaxError, struct.error...: what a damaged file makes a decoder raise
        raise SceneError(f"{what} is a damaged image file ({type(e).__name__}: {shown(str(e), 200)}).") from None


def _check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ResourceError(f"{what} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than "
                            f"the {MAX_IMAGE_PIXELS / 1e6:.0f} allowed.")


def _as_image_or_array(value: Any, what: str, budget: DecodeBudget | None = None) -> Image.Image | np.ndarray:
    if isinstance(value, (str, os.PathLike)):
        return _open_image(value, what, budget)
    if isinstance(value, Image.Image):
        _check_pixels(value.width, value.height, what)
        return value
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError, RuntimeError) as e:  # e.g. a tensor on a GPU
            raise SceneError(f"{what} cannot be read as an array ({e}).") from None
        if array.dtype.kind not in "biuf":
            raise SceneError(f"{what} must hold numbers, got an array of {array.dtype}.")
        if array.ndim >= 2:
            _check_pixels(array.shape[1], array.shape[0], what)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise SceneError(f"{what} holds NaN or infinite values.")
        return array
    raise SceneError(f"{what} must be an image, a numpy array or an image file path, "
                     f"got {type(value).__name__}.")


def normalize_mask(mask: Any, height: int, width: int, what: str = "The mask",
                   budget: DecodeBudget | None = None) -> np.ndarray:
    """A bool [height, width] array, True where painted: alpha > 0 for images with alpha (and arrays with 2 or 4
    channels), any channel > 0 otherwise. Masks of the canvas aspect ratio are nearest-resized."""
    source = _as_image_or_array(mask, what, budget)
    if isinstance(source, Image.Image):
        bands = source.getbands()
        if "A" in bands or "a" in bands:
            array = np.asarray(source.getchannel("A" if "A" in bands else "a"))
        elif source.mode == "P":
            array = np.asarray(source.convert("RGBA" if "transparency" in source.info else "RGB"))
            array = array[..., 3] if array.shape[2] == 4 else array
        elif len(bands) == 1:
            array = np.asarray(source)
        else:
            array = np.asarray(source.convert("RGB"))
    else:
        array = source
    if array.ndim == 3 and array.shape[2] in (2, 4):
        array = array[..., -1]  # alpha
    elif array.ndim == 3 and array.shape[2] in (1, 3):
        array = array.max(axis=2)
    if array.ndim != 2:
        raise SceneError(f"{what} must be a [height, width] array or an image, got shape {array.shape}.")
    painted = array if array.dtype == bool else array > 0    # (a bool array compared to 0 costs 10x its copy)
    if _fit_size(painted.shape, height, width, what):
        painted = _resize_nearest(painted, height, width)
    return np.array(painted, dtype=bool)  # always a fresh array


def normalize_image(image: Any, height: int, width: int, what: str = "The image",
                    budget: DecodeBudget | None = None) -> Image.Image:
    """A PIL RGB image of exactly the canvas size. Transparent pixels become white; an image of the canvas aspect
    ratio is Lanczos-resized; numpy input is uint8 or float in [0, 1], [H, W] or [H, W, 3 or 4]."""
    source = _as_image_or_array(image, what, budget)
    if isinstance(source, np.ndarray):
        source = _array_to_image(source, what)
    if "A" in source.getbands() or (source.mode == "P" and "transparency" in source.info):
        white = Image.new("RGBA", source.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, source.convert("RGBA")).convert("RGB")
    else:
        rgb = source.convert("RGB")
    if _fit_size((rgb.height, rgb.width), height, width, what):
        rgb = rgb.resize((width, height), Image.LANCZOS)
    return rgb  # convert() and resize() return new images: the caller's image is never shared


def _array_to_image(array: np.ndarray, what: str) -> Image.Image:
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise SceneError(f"{what} must be a [height, width, 3] RGB array, got shape {array.shape}.")
    if array.dtype.kind == "b":
        raise SceneError(f"{what} must be an RGB image, not a bool mask.")
    if array.dtype.kind == "f":
        if array.size and (array.min() < 0 or array.max() > 1):
            raise SceneError(f"{what}: float pixel values must lie in [0, 1].")
        array = np.round(array * 255)
    elif array.size and (array.min() < 0 or array.max() > 255):
        raise SceneError(f"{what}: integer pixel values must lie in [0, 255].")
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
