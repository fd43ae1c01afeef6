"""Scene data, validation and palette files (semantic_draw/scene.py)."""

import ast
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scenes import ASSETS, FIXTURES, fixture_scene, rect_mask, rect_scene
from semantic_draw.errors import ResourceError, SceneError, SemanticDrawError
from semantic_draw.scene import PALETTE_FORMAT, Background, Layer, Scene, palette_colors
import semantic_draw.palette as palette_module
import semantic_draw.scene as scene_module

LAYER_FIELDS = ("prompt", "name", "negative_prompt", "mask_strength", "mask_blur", "prompt_strength")


def assert_same_scene(a: Scene, b: Scene) -> None:
    assert (a.height, a.width, a.name, a.negative_prompt, a.extra) == (b.height, b.width, b.name, b.negative_prompt,
                                                                       b.extra)
    assert (a.background.prompt, a.background.negative_prompt) == (b.background.prompt, b.background.negative_prompt)
    if a.background.image is None or b.background.image is None:
        assert a.background.image is None and b.background.image is None
    else:
        assert np.array_equal(np.asarray(a.background.image), np.asarray(b.background.image))
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers):
        assert [getattr(la, f) for f in LAYER_FIELDS] == [getattr(lb, f) for f in LAYER_FIELDS]
        assert la.mask.dtype == lb.mask.dtype == bool and np.array_equal(la.mask, lb.mask)


def rich_scene() -> Scene:
    """Every field set to something other than its default; a noisy mask so a lossy codec would show."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    return Scene(
        height=48, width=80, name="Ünïcode scene", negative_prompt="blurry",
        layers=[Layer("a red fox", rng.random((48, 80)) > 0.5, name="fox", negative_prompt="dog",
                      mask_strength=0.3, mask_blur=2.5, prompt_strength=0.7),
                Layer("the moon", rect_mask(48, 80, (0, 60, 10, 80)), negative_prompt=None, mask_blur=0)],
        background=Background("a forest at night", negative_prompt="daylight", image=photo),
        extra={"about": "test", "suggested": {"bootstrap_steps": 2}},
    ).validate()


# ---------------------------------------------------------------- round trip

@pytest.mark.parametrize("target", ["palette", "palette.zip"])
def test_save_load_round_trip_keeps_everything(tmp_path, target):
    scene = rich_scene()
    scene.save(tmp_path / target)
    loaded = Scene.load(tmp_path / target)
    assert_same_scene(scene, loaded)
    assert loaded.layers[1].name == "Brush 2" and loaded.layers[1].negative_prompt == "blurry"


def test_saved_files_are_the_documented_format(tmp_path):
    scene = rich_scene()
    scene.save(tmp_path / "p")
    d = json.loads((tmp_path / "p" / "scene.json").read_text("utf-8"))
    assert d["format"] == PALETTE_FORMAT and d["about"] == "test"
    assert [layer["mask"] for layer in d["layers"]] == ["mask_1.png", "mask_2.png"]
    assert d["background"]["image"] == "background.png"
    mask = Image.open(tmp_path / "p" / "mask_1.png")
    assert mask.mode == "RGBA" and mask.size == (80, 48)
    rgba = np.asarray(mask)
    assert set(np.unique(rgba[..., 3])) == {0, 255}
    assert np.array_equal(rgba[..., 3] == 255, scene.layers[0].mask)
    assert tuple(rgba[scene.layers[0].mask][0, :3]) == palette_colors(2)[0]


def test_save_refuses_a_folder_that_is_not_a_palette(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SemanticDrawError, match="not empty"):
        rich_scene().save(tmp_path)
    rich_scene().save(tmp_path / "p")
    rich_scene().save(tmp_path / "p")  # overwriting a palette is fine


def test_zip_with_scene_in_one_top_level_folder_loads(tmp_path):
    rich_scene().save(tmp_path / "p")
    with zipfile.ZipFile(tmp_path / "nested.zip", "w") as z:
        for f in (tmp_path / "p").iterdir():
            z.write(f, f"my palette/{f.name}")
    assert_same_scene(Scene.load(tmp_path / "nested.zip"), rich_scene())


def test_load_accepts_a_scene_json_path(tmp_path):
    rich_scene().save(tmp_path / "p")
    assert_same_scene(Scene.load(tmp_path / "p" / "scene.json"), rich_scene())


# ---------------------------------------------------------------- fixtures and assets

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="the shared fixtures are not on this machine")


@needs_fixtures
def test_fixtures_load_as_they_are():
    iw = Scene.load(FIXTURES / "irworobongdo")
    assert (iw.width, iw.height, len(iw.layers)) == (1920, 768, 8)
    assert iw.background.prompt == "clear deep blue sky"
    assert [layer.prompt for layer in iw.layers][:3] == ["summer mountains", "the sun", "the moon"]
    assert [layer.name for layer in iw.layers] == [f"Brush {i}" for i in range(1, 9)]
    assert all(layer.negative_prompt == iw.negative_prompt for layer in iw.layers)
    alpha = np.asarray(Image.open(FIXTURES / "irworobongdo" / "irworobongdo_2.png"))[..., 3]
    assert np.array_equal(iw.layers[1].mask, alpha > 0)

    ts = Scene.load(FIXTURES / "timessquare")
    assert (ts.width, ts.height, len(ts.layers)) == (768, 768, 2)
    assert ts.layers[0].prompt.startswith("1boy") and ts.layers[0].negative_prompt == "1girl"
    assert ts.extra["suggested"]["bootstrap_steps"] == 2


@needs_fixtures
@pytest.mark.parametrize("name", ["irworobongdo", "timessquare"])
def test_assets_hold_the_fixture_masks(name):
    original, asset = Scene.load(FIXTURES / name), fixture_scene(name)
    assert len(original.layers) == len(asset.layers)
    for a, b in zip(original.layers, asset.layers):
        assert a.prompt == b.prompt and np.array_equal(a.mask, b.mask)


def test_assets_load():
    iw, ts, edit = (Scene.load(ASSETS / n) for n in ("irworobongdo", "timessquare", "timessquare-edit"))
    assert (iw.height, iw.width, len(iw.layers)) == (768, 1920, 8)
    assert (ts.height, ts.width, len(ts.layers)) == (768, 768, 2)
    assert ts.background.image is None
    assert edit.background.image.size == (768, 768) and edit.background.image.mode == "RGB"
    assert [layer.mask_blur for layer in edit.layers] == [16.0, 16.0]
    assert edit.extra["suggested"]["bootstrap_steps"] == 2
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(ts.layers, edit.layers))
    assert (ASSETS / "timessquare-edit" / "background.png").stat().st_size < 1_100_000


# ---------------------------------------------------------------- resizing

def test_resized_sets_sizes_and_keeps_aspect():
    iw = fixture_scene("irworobongdo", height=64)
    assert (iw.height, iw.width) == (64, 160)
    assert all(layer.mask.shape == (64, 160) and layer.mask.any() for layer in iw.layers)
    assert (fixture_scene("irworobongdo", width=320).height) == 128
    edit = fixture_scene("timessquare-edit", 64, 64)
    assert edit.background.image.size == (64, 64)
    stretched = rect_scene(64, 64).resized(32, 64)
    assert stretched.layers[0].mask.shape == (32, 64)
    assert np.array_equal(stretched.layers[0].mask, rect_mask(32, 64, (8, 16, 24, 48)))


def test_resized_names_a_brush_that_vanishes():
    scene = rect_scene(64, 64, [("big", (0, 0, 64, 64)), ("dot", (5, 5, 6, 6))])
    with pytest.raises(SemanticDrawError, match=r"Brush 2.*vanishes"):
        scene.resized(8, 8)


def test_resized_does_not_change_the_original():
    scene = fixture_scene("timessquare")
    before = [layer.mask.copy() for layer in scene.layers]
    scene.resized(64)
    assert scene.height == 768 and all(np.array_equal(a, l.mask) for a, l in zip(before, scene.layers))


# ---------------------------------------------------------------- mask inputs

def mask_inputs(tmp_path):
    """The same painted rectangle as every kind of mask input."""
    painted = rect_mask(32, 48, (4, 8, 20, 40))
    u8 = painted.astype(np.uint8) * 200
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[painted] = (10, 20, 30, 1)  # any alpha > 0 counts
    path = tmp_path / "mask.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return {
        "numpy bool": painted, "numpy uint8": u8, "numpy float": painted * 0.25,
        "numpy rgba": rgba, "PIL RGBA": Image.fromarray(rgba, "RGBA"), "PIL L": Image.fromarray(u8, "L"),
        "PIL 1": Image.fromarray(painted), "PIL P": Image.fromarray(u8, "L").convert("P"),
        "PIL RGB": Image.fromarray(np.stack([u8, 0 * u8, 0 * u8], -1), "RGB"),
        "path str": str(path), "path": path,
        "half size": painted[::2, ::2], "double size": np.kron(painted, np.ones((2, 2), bool)),
    }


def test_every_mask_input_normalizes_to_the_same_bool_mask(tmp_path):
    expected = rect_mask(32, 48, (4, 8, 20, 40))
    for kind, mask in mask_inputs(tmp_path).items():
        scene = Scene(32, 48, [Layer("x", mask)]).validate()
        got = scene.layers[0].mask
        assert got.dtype == bool and got.shape == (32, 48), kind
        assert np.array_equal(got, expected), kind


def test_rgba_image_uses_alpha_not_colour():
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 255          # white everywhere...
    rgba[:8, :, 3] = 255         # ...but only the top half is opaque
    mask = Scene(16, 16, [Layer("x", Image.fromarray(rgba, "RGBA"))]).validate().layers[0].mask
    assert mask[:8].all() and not mask[8:].any()


def test_validate_returns_new_objects_and_leaves_the_input_alone():
    mask = rect_mask(32, 32, (0, 0, 16, 16)).astype(np.uint8)
    layer = Layer("x", mask, mask_strength=1)
    scene = Scene(32, 32, [layer], negative_prompt="bad")
    out = scene.validate()
    assert out is not scene and out.layers[0] is not layer
    assert layer.mask is mask and mask.dtype == np.uint8 and layer.name == "" and layer.negative_prompt is None
    assert isinstance(out.layers[0].mask_strength, float) and out.layers[0].negative_prompt == "bad"
    assert out.background.negative_prompt == "bad"
    out.layers[0].mask[:] = False
    assert scene.validate().layers[0].mask.any()  # no shared arrays


# ---------------------------------------------------------------- background image

def test_background_image_inputs(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "bg.png")
    for image in (rgb, rgb / 255.0, Image.fromarray(rgb), tmp_path / "bg.png"):
        bg = Scene(16, 24, background=Background(image=image)).validate().background.image
        assert bg.mode == "RGB" and np.array_equal(np.asarray(bg), rgb)
    clear = Image.new("RGBA", (24, 16), (0, 0, 0, 0))
    assert np.asarray(Scene(16, 24, background=Background(image=clear)).validate().background.image).min() == 255
    big = Scene(16, 24, background=Background(image=Image.fromarray(rgb).resize((48, 32)))).validate()
    assert big.background.image.size == (24, 16)


# ---------------------------------------------------------------- bad scenes

def ok_layer(**changes):
    return Layer(**{"prompt": "a cat", "mask": rect_mask(64, 64, (0, 0, 32, 32)), **changes})


BAD_SCENES = {
    "height not int": (lambda: Scene("64", 64, [ok_layer()]), ["height", "whole number"]),
    "width zero": (lambda: Scene(64, 0, [ok_layer()]), ["width", "positive"]),
    "not multiple of 8": (lambda: Scene(64, 100, [ok_layer()]), ["width", "multiple of 8", "100"]),
    "too big": (lambda: Scene(64, 8200, [ok_layer()]), ["width", "8192"]),
    "empty scene": (lambda: Scene(64, 64), ["Nothing to draw", "brush", "background prompt"]),
    "blank prompt": (lambda: Scene(64, 64, [ok_layer(), ok_layer(prompt="  ")]), ["Brush 2", "prompt"]),
    "prompt not text": (lambda: Scene(64, 64, [ok_layer(prompt=3)]), ["Brush 1", "prompt", "text"]),
    "negative not text": (lambda: Scene(64, 64, [ok_layer(negative_prompt=1)]), ["Brush 1", "negative_prompt"]),
    "bg prompt not text": (lambda: Scene(64, 64, [ok_layer()], Background(prompt=None)), ["background prompt"]),
    "no mask": (lambda: Scene(64, 64, [ok_layer(mask=None, name="sky")]), ['Brush 1 ("sky")', "no mask"]),
    "empty mask": (lambda: Scene(64, 64, [ok_layer(), ok_layer(mask=np.zeros((64, 64)))]), ["Brush 2", "empty"]),
    "mask aspect": (lambda: Scene(64, 64, [ok_layer(mask=np.ones((64, 32)))]), ["Brush 1", "32x64", "64x64"]),
    "mask list": (lambda: Scene(64, 64, [ok_layer(mask=[[1]])]), ["Brush 1", "mask", "list"]),
    "mask 4-D": (lambda: Scene(64, 64, [ok_layer(mask=np.ones((1, 64, 64, 5)))]), ["Brush 1", "mask", "shape"]),
    "mask nan": (lambda: Scene(64, 64, [ok_layer(mask=np.full((64, 64), np.nan))]), ["Brush 1", "NaN"]),
    "mask strings": (lambda: Scene(64, 64, [ok_layer(mask=np.full((64, 64), "a"))]), ["Brush 1", "numbers"]),
    "mask missing file": (lambda: Scene(64, 64, [ok_layer(mask="/no/such.png")]), ["Brush 1", "does not exist"]),
    "mask_strength": (lambda: Scene(64, 64, [ok_layer(mask_strength=1.5)]), ["Brush 1", "mask_strength", "1.5"]),
    "prompt_strength": (lambda: Scene(64, 64, [ok_layer(prompt_strength=-0.1)]), ["Brush 1", "prompt_strength"]),
    "mask_blur negative": (lambda: Scene(64, 64, [ok_layer(mask_blur=-1)]), ["Brush 1", "mask_blur", "at least 0"]),
    "mask_blur inf": (lambda: Scene(64, 64, [ok_layer(mask_blur=float("inf"))]), ["mask_blur"]),
    "mask_blur nan": (lambda: Scene(64, 64, [ok_layer(mask_blur=float("nan"))]), ["mask_blur"]),
    "strength bool": (lambda: Scene(64, 64, [ok_layer(mask_strength=True)]), ["mask_strength", "number"]),
    "layer not Layer": (lambda: Scene(64, 64, [ok_layer(), "cat"]), ["Brush 2", "Layer"]),
    "bg image aspect": (lambda: Scene(64, 64, [], Background("x", image=np.zeros((32, 64, 3), np.uint8))),
                        ["background image", "64x32"]),
    "bg image bool": (lambda: Scene(64, 64, [], Background("x", image=np.zeros((64, 64), bool))),
                      ["background image", "bool"]),
    "bg image range": (lambda: Scene(64, 64, [], Background("x", image=np.full((64, 64, 3), 2.0))),
                       ["background image", "[0, 1]"]),
}


@pytest.mark.parametrize("case", BAD_SCENES)
def test_bad_scene_raises_a_message_naming_the_field(case):
    build, fragments = BAD_SCENES[case]
    with pytest.raises(SemanticDrawError) as info:
        build().validate()
    for fragment in fragments:
        assert fragment in str(info.value), (case, str(info.value))


def test_max_side_can_be_raised_or_lowered():
    assert Scene(64, 8200, [ok_layer(mask=np.ones((64, 8200)))]).validate(max_side=9000).width == 8200
    with pytest.raises(SemanticDrawError, match="maximum of 32"):
        rect_scene(64, 64).validate(max_side=32)


def test_mask_files_that_are_not_images(tmp_path):
    (tmp_path / "text.png").write_text("hello")
    png = tmp_path / "cut.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 255)).save(png)
    png.write_bytes(png.read_bytes()[:60])
    for path, fragment in ((tmp_path / "text.png", "not an image"), (png, "damaged"), (tmp_path, "folder")):
        with pytest.raises(SemanticDrawError, match=fragment):
            Scene(64, 64, [ok_layer(mask=path)]).validate()


def test_oversized_image_files_are_refused_before_decoding(tmp_path):
    Image.new("1", (scene_module.MAX_IMAGE_SIDE + 8, 8)).save(tmp_path / "wide.png")
    with pytest.raises(SemanticDrawError, match="larger than"):
        Scene(64, 64, [ok_layer(mask=tmp_path / "wide.png")]).validate()


# ---------------------------------------------------------------- bad palette files

def palette_dir(tmp_path, edit=None, files=None):
    """A saved palette folder; `edit(d)` changes its scene.json dict, `files` maps extra names to bytes."""
    folder = tmp_path / "p"
    rect_scene(64, 64).save(folder)
    if edit is not None:
        d = json.loads((folder / "scene.json").read_text())
        edit(d)
        (folder / "scene.json").write_text(json.dumps(d))
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    return folder


def set_mask(name):
    return lambda d: d["layers"][0].update(mask=name)


BAD_PALETTES = {
    "escaping mask": (set_mask("../outside.png"), None, ["Brush 1", "outside the palette"]),
    "absolute mask": (set_mask("/etc/passwd"), None, ["Brush 1", "outside the palette"]),
    "windows mask": (set_mask("C:\\x.png"), None, ["outside the palette"]),
    "missing mask": (set_mask("gone.png"), None, ["Brush 1", "gone.png", "missing"]),
    "mask not a name": (set_mask(5), None, ["Brush 1", "file name"]),
    "non-image mask": (set_mask("notes.png"), {"notes.png": b"just text"}, ["Brush 1", "not an image"]),
    "layers not list": (lambda d: d.update(layers={"a": 1}), None, ["layers", "list"]),
    "layer not object": (lambda d: d.update(layers=["cat"]), None, ["Brush 1", "object"]),
    "height text": (lambda d: d.update(height="64"), None, ["height", "whole number"]),
    "no width": (lambda d: d.pop("width"), None, ["width"]),
    "background text": (lambda d: d.update(background="sky"), None, ["background", "object"]),
    "strength text": (lambda d: d["layers"][0].update(mask_strength="1"), None, ["Brush 1", "mask_strength"]),
    "unknown format": (lambda d: d.update(format="other/9"), None, ["format", "other/9"]),
}


@pytest.mark.parametrize("case", BAD_PALETTES)
def test_bad_palette_raises_a_message_naming_the_field(tmp_path, case):
    edit, files, fragments = BAD_PALETTES[case]
    folder = palette_dir(tmp_path, edit, files)
    with pytest.raises(SemanticDrawError) as info:
        Scene.load(folder)
    message = str(info.value)
    assert message.startswith("Cannot load palette") and str(folder) in message
    for fragment in fragments:
        assert fragment in message, (case, message)


def test_bad_palette_containers(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "fake.zip").write_text("not a zip")
    with zipfile.ZipFile(tmp_path / "noscene.zip", "w") as z:
        z.writestr("mask_1.png", b"x")
    cases = {"missing": "no such file", "empty": "no scene.json", "notes.txt": "folder or a .zip",
             "bad.json": "not valid JSON", "list.json": "JSON object", "fake.zip": "damaged",
             "noscene.zip": "no scene.json"}
    for name, fragment in cases.items():
        with pytest.raises(SemanticDrawError, match=fragment):
            Scene.load(tmp_path / name)


def test_zip_escaping_names_and_bombs_are_refused(tmp_path, monkeypatch):
    d = rect_scene(64, 64).to_dict()
    d["layers"][0]["mask"] = "../mask_1.png"
    with zipfile.ZipFile(tmp_path / "escape.zip", "w") as z:
        z.writestr("scene.json", json.dumps(d))
        z.writestr("mask_1.png", b"x")
    with pytest.raises(SemanticDrawError, match="outside the palette"):
        Scene.load(tmp_path / "escape.zip")

    rect_scene(64, 64).save(tmp_path / "ok.zip")
    monkeypatch.setattr(palette_module, "MAX_PALETTE_BYTES", 100)
    with pytest.raises(SemanticDrawError, match="unpacks to more than"):
        Scene.load(tmp_path / "ok.zip")


def test_zip_with_a_damaged_member_is_refused(tmp_path):
    rect_scene(64, 64).save(tmp_path / "ok.zip")
    data = bytearray((tmp_path / "ok.zip").read_bytes())
    start = data.index(b"mask_1.png") + len("mask_1.png")  # first local header's name, then the compressed bytes
    data[start + 20:start + 40] = bytes(20)
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    with pytest.raises(SemanticDrawError, match="damaged"):
        Scene.load(tmp_path / "bad.zip")


def test_from_dict_without_base_takes_masks_as_given():
    d = {"height": 16, "width": 16, "layers": [{"prompt": "x", "mask": np.ones((16, 16), bool)}]}
    scene = Scene.from_dict(d).validate()
    assert scene.layers[0].mask.all() and scene.layers[0].mask_blur == 8.0


def test_from_dict_with_base_reads_the_files_of_a_palette_folder(tmp_path):
    scene = rich_scene()
    scene.save(tmp_path / "p")
    d = json.loads((tmp_path / "p" / "scene.json").read_text("utf-8"))
    assert d == scene.to_dict()
    assert_same_scene(Scene.from_dict(d, base=tmp_path / "p").validate(), scene)


def test_palette_format_is_still_importable_from_scene():
    assert scene_module.PALETTE_FORMAT is palette_module.PALETTE_FORMAT == PALETTE_FORMAT
    with pytest.raises(AttributeError):
        scene_module.NO_SUCH_NAME


# ---------------------------------------------------------------- error types

@pytest.mark.parametrize("case", BAD_SCENES)
def test_bad_scenes_raise_scene_errors_and_a_canvas_too_large_a_resource_error(case):
    with pytest.raises(ResourceError if case == "too big" else SceneError) as info:
        BAD_SCENES[case][0]().validate()
    assert (type(info.value) is ResourceError) == (case == "too big")


def test_canvas_sides_above_max_side_raise_resource_error():
    with pytest.raises(ResourceError, match="maximum of 32"):
        rect_scene(64, 64).validate(max_side=32)
    with pytest.raises(ResourceError, match="maximum of 8192"):
        rect_scene(64, 64).resized(width=9000)
    with pytest.raises(SceneError, match="try 64"):
        rect_scene(64, 64).resized(60, 60)


def test_oversized_image_file_raises_resource_error_with_its_own_message(tmp_path):
    Image.new("1", (scene_module.MAX_IMAGE_SIDE + 8, 8)).save(tmp_path / "wide.png")
    with pytest.raises(ResourceError) as info:
        Scene(64, 64, [ok_layer(mask=tmp_path / "wide.png")]).validate()
    assert str(info.value) == f"Brush 1: the mask is {scene_module.MAX_IMAGE_SIDE + 8}x8 pixels, larger than " \
                              f"{scene_module.MAX_IMAGE_SIDE} on a side."


def test_zip_over_the_size_limit_raises_resource_error(tmp_path, monkeypatch):
    rect_scene(64, 64).save(tmp_path / "ok.zip")
    monkeypatch.setattr(palette_module, "MAX_PALETTE_BYTES", 100)
    with pytest.raises(ResourceError, match=r"^Cannot load palette .*ok\.zip.*unpacks to more than"):
        Scene.load(tmp_path / "ok.zip")


@pytest.mark.parametrize("case", BAD_PALETTES)
def test_loaded_palette_errors_keep_their_subclass(tmp_path, case):
    edit, files, _ = BAD_PALETTES[case]
    with pytest.raises(SceneError, match="^Cannot load palette") as info:
        Scene.load(palette_dir(tmp_path, edit, files))
    assert type(info.value) is SceneError


def test_loaded_palette_too_large_for_max_side_raises_resource_error(tmp_path):
    folder = palette_dir(tmp_path)
    with pytest.raises(ResourceError, match=r"^Cannot load palette .*maximum of 32 pixels"):
        Scene.load(folder, max_side=32)
    with pytest.raises(SceneError, match="^Cannot load palette .*no such file"):
        Scene.load(tmp_path / "missing")


# ---------------------------------------------------------------- colours, preview, helpers

def test_palette_colors_are_distinct_and_stable():
    colors = palette_colors(40)
    assert len(set(colors)) == 40 and colors[:5] == palette_colors(5)
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors)


def test_preview_paints_each_brush_in_its_colour():
    scene = rect_scene(32, 32, [("a", (0, 0, 16, 16)), ("b", (8, 8, 24, 24))])
    image = np.asarray(scene.preview(opacity=1.0))
    colors = palette_colors(2)
    assert image.shape == (32, 32, 3)
    assert tuple(image[2, 2]) == colors[0] and tuple(image[12, 12]) == colors[1]  # later brush on top
    assert tuple(image[30, 30]) == (255, 255, 255)
    with_photo = fixture_scene("timessquare-edit", 64, 64).preview()
    assert with_photo.size == (64, 64) and np.asarray(with_photo).std() > 10


def test_fixture_scene_hands_out_copies():
    first = fixture_scene("timessquare")
    first.layers[0].mask[:] = False
    first.layers[0].prompt = "changed"
    second = fixture_scene("timessquare")
    assert second.layers[0].mask.any() and second.layers[0].prompt.startswith("1boy")


def test_rect_scene_helper():
    scene = rect_scene(32, 48, [("a", (0, 0, 8, 8)), ("b", (8, 8, 16, 48), {"mask_blur": 0})], mask_blur=3)
    assert [layer.mask_blur for layer in scene.layers] == [3.0, 0.0]
    assert scene.layers[1].mask.sum() == 8 * 40 and scene.background.prompt


def test_scene_module_stays_free_of_heavy_imports():
    tree = ast.parse(Path(scene_module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"torch", "diffusers", "gradio", "transformers"}


def test_palette_module_stays_free_of_heavy_imports():
    tree = ast.parse(Path(palette_module.__file__).read_text())
    nodes = list(ast.walk(tree))
    roots = {alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in nodes if isinstance(node, ast.ImportFrom) and node.module}
    assert not roots & {"torch", "diffusers", "gradio", "transformers"}
