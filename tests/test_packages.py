"""Programs compiled ahead of time and kept in a folder (``SemanticDraw.compile_ahead``, packages.py): torch's real
AOTInductor on the CPU (tiny-sd3, whose programs compile in seconds), the same images as eager, a second model on
the same folder loading the programs instead of compiling, their weights the module's own, and bad folders or files
costing only a compile."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scenes import rect_scene
from semantic_draw import OptionError, SemanticDraw
from semantic_draw.packages import INDEX, DecoderPrograms, Packages, decoder_programs, folder_key

CANVAS = [(64, 64)]


def scenes():
    return [rect_scene(64, 64, [(f"brush {i}", (0, 20 * i, 64, 20 * i + 24)) for i in range(k)],
                       background_prompt="a table") for k in (1, 2)]


def outputs(model, scene):
    """A one-shot and a stream's first frames (the filling one, steady ones), as latents."""
    got = [model.generate(scene, seed=1, output="latent")]
    with model.stream(scene, seed=1) as session:
        got += [session.next_frame(output="latent") for _ in range(4)]
    return got


def assert_same_pictures(model, eager, scene):
    """A one-shot's picture (the VAE) and stream frames (the tiny VAE), up to the rounding of a pixel value."""
    def pictures(m):
        got = [m.generate(scene, seed=1)]
        with m.stream(scene, seed=1) as session:
            got += [session.next_frame() for _ in range(3)]
        return [np.asarray(p).astype(int) for p in got]
    for a, b in zip(pictures(model), pictures(eager), strict=True):
        assert np.abs(a - b).max() <= 1


def assert_same(got, want):
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder in which a first model compiled its programs (1 brush, the latent layout), and that model."""
    path = tmp_path_factory.mktemp("programs")
    model = SemanticDraw.from_preset("tiny-sd3")
    net = model.compile_ahead(str(path), canvases=CANVAS, brushes=(1,), regions=("latent",))
    return path, model, net


def test_programs_compiled_ahead_give_the_eager_images_at_other_brush_counts_too(folder):
    path, model, net = folder
    assert model.packages.compiled >= 1 and model.packages.loaded == 0
    assert (model.packages.folder / INDEX).is_file()
    assert len(list(model.packages.folder.glob("program-*.pt2"))) == model.packages.compiled
    eager = SemanticDraw.from_preset("tiny-sd3")
    for scene in scenes():            # 2 brushes were never captured: the dynamic batch serves them
        assert_same(outputs(model, scene), outputs(eager, scene))
    assert net.fallbacks == 0
    # the decoders too: one program each for the canvas's whole-picture decode, the same pictures
    for name in ("vae", "tiny_vae"):
        assert list(decoder_programs(model.backbone, name).programs) == [(1, 16, 8, 8)]
    assert_same_pictures(model, eager, scenes()[1])
    assert all(decoder_programs(model.backbone, name).fallbacks == 0 for name in ("vae", "tiny_vae"))


def test_a_new_model_on_the_folder_loads_the_programs_and_compiles_nothing(folder):
    path, first, _ = folder
    model = SemanticDraw.from_preset("tiny-sd3")
    net = model.compile_ahead(str(path), canvases=CANVAS, brushes=(1,), regions=("latent",))
    assert model.packages.compiled == 0 and model.packages.loaded == first.packages.compiled
    programs = {view: list(ps) for view, ps in net.programs.items()}
    again = model.compile_ahead(str(path), canvases=CANVAS, brushes=(1,), regions=("latent",))   # once more
    assert again.programs == programs and model.packages.loaded == first.packages.compiled   # nothing twice
    files = [entry["file"] for entry in json.loads((model.packages.folder / INDEX).read_text())]
    assert len(files) == len(set(files)) == first.packages.compiled
    net = again
    assert all(type(p.run).__name__ == "Run" for ps in net.programs.values() for p in ps)
    eager = SemanticDraw.from_preset("tiny-sd3")
    for scene in scenes():
        assert_same(outputs(model, scene), outputs(eager, scene))
    assert net.fallbacks == 0
    # the programs read the module's own parameters (handed over, not copied): a change to them is seen
    with torch.no_grad():
        for m in (model, eager):
            m.backbone.denoiser.proj_out.weight.mul_(0.5)
    assert_same(outputs(model, scenes()[0]), outputs(eager, scenes()[0]))
    assert_same_pictures(model, eager, scenes()[0])
    assert all(decoder_programs(model.backbone, name).fallbacks == 0 for name in ("vae", "tiny_vae"))
    model.generate(rect_scene(48, 48), seed=0)             # views of another size: no program, eager, counted
    assert net.fallbacks > 0 and decoder_programs(model.backbone, "vae").fallbacks > 0
    # compiled afterwards too: the decoders' programs stay, what they do not serve goes through torch.compile
    model.compile(backend="eager")
    for name in ("vae", "tiny_vae"):
        decoder = decoder_programs(model.backbone, name)
        assert isinstance(decoder, DecoderPrograms) and hasattr(decoder.inner, "_orig_mod")
    assert model.backbone.net is net and net.module is not model.backbone.denoiser
    fallbacks = net.fallbacks
    assert_same(outputs(model, scenes()[0]), outputs(eager, scenes()[0]))
    assert net.fallbacks == fallbacks                       # the programs still serve their calls
    model.generate(rect_scene(48, 48), seed=0)
    model.compiled.uncompile()
    assert model.backbone.net is net and net.module is model.backbone.denoiser


def test_a_damaged_program_or_index_costs_only_a_compile(folder, tmp_path):
    path, first, _ = folder
    copy = tmp_path / "copy"
    sub = copy / first.packages.folder.name
    sub.mkdir(parents=True)
    for f in first.packages.folder.iterdir():
        (sub / f.name).write_bytes(f.read_bytes())
    damaged = next(sub.glob("program-*.pt2"))
    damaged.write_bytes(damaged.read_bytes()[:1000])        # cut short
    model = SemanticDraw.from_preset("tiny-sd3")
    net = model.compile_ahead(str(copy), canvases=CANVAS, brushes=(1,), regions=("latent",))
    assert model.packages.loaded == first.packages.compiled - 1 and model.packages.compiled == 1
    assert_same(outputs(model, scenes()[0]), outputs(SemanticDraw.from_preset("tiny-sd3"), scenes()[0]))
    assert net.fallbacks == 0
    files = {entry["file"] for entry in json.loads((sub / INDEX).read_text())}
    assert damaged.name not in files and len(files) == first.packages.compiled   # the index lists the new one
    assert not damaged.exists()                                                   # and the damaged file is gone
    again = SemanticDraw.from_preset("tiny-sd3")
    for text in ("{not json", "7", '[{"file": "nothing.pt2"}]', '["program.pt2", 3, {"file": 4}]'):
        (sub / INDEX).write_text(text)
        assert Packages(copy, again.backbone).load() == {}


def test_the_folder_follows_what_the_programs_depend_on():
    sd3, sd15 = SemanticDraw.from_preset("tiny-sd3"), SemanticDraw.from_preset("tiny-sd15")
    assert folder_key(sd3.backbone) == folder_key(SemanticDraw.from_preset("tiny-sd3").backbone)
    assert folder_key(sd3.backbone) != folder_key(sd15.backbone)
    half = SemanticDraw.from_preset("tiny-sd3", dtype=torch.bfloat16)
    assert folder_key(half.backbone) != folder_key(sd3.backbone)


def test_a_folder_under_home_is_written_as_users_write_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    packages = Packages("~/.cache/semantic-draw", SemanticDraw.from_preset("tiny-sd3").backbone)
    assert packages.folder.parent == tmp_path / ".cache" / "semantic-draw"


def test_compile_ahead_needs_a_folder():
    with pytest.raises(OptionError, match="compile_cache"):
        SemanticDraw.from_preset("tiny-sd3", compile_ahead=True)
    with pytest.raises(OptionError, match="compile_ahead"):
        SemanticDraw.from_preset("tiny-sd3", compile_ahead="yes", compile_cache="/tmp/x")
    with pytest.raises(OptionError, match="folder"):
        SemanticDraw.from_preset("tiny-sd3").compile_ahead(None)


def test_the_attention_layouts_programs_round_trip_through_the_folder(tmp_path):
    """Its calls carry a region context (a registered dataclass in the program's input structure): saved in the
    index, loaded by a new model, serving every brush count."""
    first = SemanticDraw.from_preset("tiny-sd3")
    first.compile_ahead(str(tmp_path), canvases=CANVAS, brushes=(1,), regions=("attention",), decoders=False)
    assert first.packages.compiled >= 1
    model, eager = SemanticDraw.from_preset("tiny-sd3"), SemanticDraw.from_preset("tiny-sd3")
    net = model.compile_ahead(str(tmp_path), canvases=CANVAS, brushes=(1,), regions=("attention",), decoders=False)
    assert model.packages.compiled == 0 and model.packages.loaded == first.packages.compiled
    assert True in {p.regions for ps in net.programs.values() for p in ps}   # (and SD3's plain solo calls)
    for k in (1, 3):
        scene = rect_scene(64, 64, [(f"brush {i}", (0, 12 * i, 64, 12 * i + 20)) for i in range(k)],
                           background_prompt="a table")
        got = [model.generate(scene, seed=1, output="latent", regions="attention")]
        want = [eager.generate(scene, seed=1, output="latent", regions="attention")]
        with model.stream(scene, seed=1, regions="attention") as a, eager.stream(scene, seed=1,
                                                                                regions="attention") as b:
            for _ in range(3):
                got.append(a.next_frame(output="latent"))
                want.append(b.next_frame(output="latent"))
        assert_same(got, want)
    assert net.fallbacks == 0


def test_processes_sharing_a_folder_each_add_their_programs_to_the_index(tmp_path):
    """An index is written whole (a file of its own, then renamed) and keeps what another process listed meanwhile,
    as long as that program's file is there."""
    from torch.utils._pytree import tree_flatten
    from semantic_draw.compiled import Program
    from semantic_draw.packages import Run
    backbone = SemanticDraw.from_preset("tiny-sd3").backbone
    one, other = Packages(tmp_path, backbone), Packages(tmp_path, backbone)
    one.folder.mkdir(parents=True)
    spec = tree_flatten(((torch.zeros(2, 16, 8, 8),), {}))[1]

    def program(name):
        (one.folder / name).write_bytes(b"a program")
        return {(16, 8, 8): [Program(Run(None, one.folder / name), spec, [((2, 63), 16, 8, 8)])]}

    def listed():
        return [entry["file"] for entry in json.loads((one.folder / INDEX).read_text())]
    one.save(program("program-a.pt2"))
    other.save(program("program-b.pt2"))
    assert sorted(listed()) == ["program-a.pt2", "program-b.pt2"]
    one.save(program("program-a.pt2"))                       # saved again: still listed once, b kept
    assert sorted(listed()) == ["program-a.pt2", "program-b.pt2"]
    (one.folder / "program-b.pt2").unlink()                  # a program deleted (damaged, say): dropped
    one.save(program("program-a.pt2"))
    assert listed() == ["program-a.pt2"]
    assert not list(one.folder.glob("*.tmp"))
    loaded = Packages(tmp_path, backbone)
    assert loaded._listed(one.folder / INDEX)[0]["sizes"] == [[[2, 63], 16, 8, 8]]


def test_saves_at_the_same_moment_drop_no_entry(tmp_path, monkeypatch):
    """Processes that save together each read the index, merge and write it: without a lock between them, the last
    writer drops what the others added while it merged (here every save waits after reading, so they overlap)."""
    import threading
    import time
    from torch.utils._pytree import tree_flatten
    from semantic_draw.compiled import Program
    from semantic_draw.packages import Run
    backbone = SemanticDraw.from_preset("tiny-sd15").backbone
    savers = [Packages(tmp_path, backbone) for _ in range(6)]
    savers[0].folder.mkdir(parents=True)
    spec = tree_flatten(((torch.zeros(2, 4, 8, 8),), {}))[1]
    listed = Packages._listed

    def slow_listed(self, index):
        entries = listed(self, index)
        time.sleep(0.05)                     # the others read the same index meanwhile
        return entries
    monkeypatch.setattr(Packages, "_listed", slow_listed)

    def save(i):
        path = savers[i].folder / f"program-{i}.pt2"
        path.write_bytes(b"a program")
        savers[i].save({(4, 8, 8): [Program(Run(None, path), spec, [((2, 63), 4, 8, 8)])]})
    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(savers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = sorted(entry["file"] for entry in json.loads((savers[0].folder / INDEX).read_text()))
    assert files == [f"program-{i}.pt2" for i in range(len(savers))]


def test_programs_that_cannot_be_compiled_leave_the_model_as_it_was(tmp_path, monkeypatch):
    """Out of disk space while compiling, every program: compile_ahead says so and returns; the calls and the
    decodes run eager, giving the same images; no file is left behind."""
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_space)
    model, eager = SemanticDraw.from_preset("tiny-sd3"), SemanticDraw.from_preset("tiny-sd3")
    net = model.compile_ahead(str(tmp_path), canvases=CANVAS, brushes=(1,), regions=("latent",))
    assert net.failed and all("No space left on device" in why for why in net.failed)
    assert not net.programs and model.packages.compiled == 0
    scene = scenes()[1]
    assert_same(outputs(model, scene), outputs(eager, scene))
    assert_same_pictures(model, eager, scene)
    assert net.fallbacks > 0
    assert not [f for f in tmp_path.rglob("*") if f.is_file()]      # no program, no half-written file, no index
