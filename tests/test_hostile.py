"""Hostile inputs: each case of the issue gets its SemanticDrawError subclass and leaves the model working; the memory
cases run in a worker capped at 3 GiB of address space; a seeded fast subset of tests/fuzz_inputs.py runs in capped
workers too (the full run: python tests/fuzz_inputs.py --palettes 1000 --calls 250 --seed 0)."""
from __future__ import annotations

import builtins
import io
import json
import os
import signal
import zipfile
from contextlib import contextmanager

import numpy as np
import pytest

import fuzz_inputs as F
from semantic_draw import Layer, Scene
from semantic_draw.errors import ResourceError, SceneError
import semantic_draw.scene as scene_module

MEMORY_CAP = 3 * 2 ** 30   # torch on CPU and the tiny model take ~1.2 GiB of address space (VmPeak, measured)

# (case name in fuzz_inputs, the outcome it must have): the issue's inputs, each one by name
PALETTE_CASES = {
    "palette: lone surrogate prompt": "SceneError",
    "palette: lone surrogate name": "SceneError",
    "palette: 5000-digit height": "SceneError",
    "palette: 5000-digit mask_blur": "SceneError",
    "palette: JSON nested 100,000 deep": "ResourceError",
    "palette: JSON nested 1,000 deep in a prompt": "ResourceError",
    "palette: mask name with NUL": "SceneError",
    "palette: mask name of 5,000 characters": "SceneError",
    "palette: scene.json is a folder": "SceneError",
    "palette: scene.json is a loop": "SceneError",
    "palette: scene.json is a loop2": "SceneError",
    "palette: zip member scene.json flagged encrypted": "SceneError",
    "palette: zip member mask flagged encrypted": "SceneError",
    "palette: mask_blur 2**63": "SceneError",
    "palette: mask_1.png is a fifo": "SceneError",
    "palette: scene.json is a fifo": "SceneError",
    "palette: the palette path is a fifo": "SceneError",
    "palette: mask_1.png is a socket": "SceneError",
    "palette: 64 brushes on 8192^2": "ResourceError",
    "palette: 1,100 brushes": "ResourceError",
    "palette: 400,000-character prompt": "ResourceError",
    "palette: zip with 5,000 members": "ResourceError",
    "palette: mask is a PNG claiming 100000^2": "ResourceError",
    "palette: mask is a PNG claiming 12000^2 (bomb under PIL's limit)": "ResourceError",
}
CALL_CASES = {
    "call: Scene.save to a lone surrogate name": "SceneError",   # found by the long fuzz run: raw errors before
    "call: session.next_frame output=array([1, 2])": "OptionError",
    "call: Scene.resized(tensor(32))": "SceneError",             # (32 resizes; 7 is no multiple of 8)
    "call: from_preset compile_cache with a lone surrogate": "OptionError",
    "call: compile_ahead into a lone surrogate folder": "OptionError",
    "call: generate regions=array([1, 2])": "OptionError",   # found by the long fuzz run: a raw ValueError before
    "call: generate regions=None": "OptionError",
    "call: generate method=array([1, 2])": "OptionError",
    "call: stream regions=array([1, 2])": "OptionError",
    "call: generate seed=18446744073709551616": "OptionError",
    "call: generate seed=nan": "OptionError",
    "call: generate seed=None": "OptionError",
    "call: generate seed=[1]": "OptionError",
    "call: generate seed=1.5": "OptionError",
    "call: generate seed='3'": "OptionError",
    "call: generate guidance='7'": "OptionError",
    "call: generate batch_size=1.5": "OptionError",
    "call: generate steps='4'": "OptionError",
    "call: generate steps=1000": "OptionError",
    "call: generate steps=0": "OptionError",
    "call: generate callback=5": "OptionError",
    "call: generate output='bogus'": "OptionError",
    "call: generate guidance=-1": "OptionError",
    "call: generate guidance=nan": "OptionError",
    "call: generate guidance=inf": "OptionError",
    "call: generate cover_alpha=nan": "OptionError",
    "call: generate cover_alpha=-1": "OptionError",
    "call: generate cover_alpha=2": "OptionError",
    "call: generate tile_size=0": "OptionError",
    "call: generate tile_size=-8": "OptionError",
    "call: generate tile_size=3": "OptionError",
    "call: generate leak_sensitivity=nan": "OptionError",
    "call: generate bootstrap_mix_steps=nan": "OptionError",
    "call: stream seed=1.5": "OptionError",
    "call: stream seed='3'": "OptionError",
    "call: stream guidance=nan": "OptionError",
    "call: stream tile_size=3": "OptionError",
    "call: mask_blur=1e300": "SceneError",
    "call: mask_blur=2**63": "SceneError",
    "call: mask_blur=10**400": "SceneError",
    "call: surrogate prompt": "SceneError",
    "call: surrogate negative prompt": "SceneError",
    "call: surrogate background prompt": "SceneError",
    "call: surrogate edit_layer prompt": "SceneError",
    "call: 1,100 brushes": "ResourceError",
    "call: 64 brushes on 8192^2": "ResourceError",
    "call: Scene.load(None)": "SceneError",
    "call: Scene.load(a FIFO)": "SceneError",
    "call: Scene.load('/dev/zero')": "SceneError",
    "call: Scene.load(NUL)": "SceneError",
    "call: from_preset(device='cuda') on a CPU build": "LoadError",
    "call: from_preset(foo=1)": "OptionError",
    "call: from_preset(compile_shapes='both')": "OptionError",
    "call: pipeline folder with an unrelated nested .pt": "fine",
    **{f"call: safetensors {label}": "LoadError" for label in F.MALICIOUS_HEADERS},
    **{f"call: junk weights: {kind}": "LoadError" for kind in ("wrong shapes", "unrelated keys", "no tensors",
                                                               "truncated")},
    "call: pipeline folder: unet weights malicious header": "LoadError",
    "call: pipeline folder: unet weights of another model": "LoadError",
    "call: pipeline folder: unet weights a fifo": "LoadError",
    "call: pipeline folder: model_index not JSON": "LoadError",
}
# run in a worker capped at MEMORY_CAP: each of these took more than 4 GiB, or decompresses hundreds of MB
MEMORY_CASES = {
    "palette: scene.json is a zero": "SceneError",
    "palette: 400 MB prompt": "ResourceError",
    "palette: 400 MB prompt zipped": "ResourceError",
    "palette: 20 brushes sharing one 8192^2 PNG": "ResourceError",
    'palette: 500 MB of "[]," zipped to 490 KB': "ResourceError",
    "call: 400 MB prompt": "ResourceError",
    "call: mask_blur=1e6 on a 64 px scene": "SceneError",
    "palette: 2 brushes sharing one 8192^2 PNG": "ResourceError",   # loads (1 GiB of masks), then too big to draw
}
CASES = {case.name: case for case in F.named_palettes() + F.named_calls()}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return F.Ctx(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def capped_run():
    """The fast fuzz subset (seeded random cases) and the memory cases, in workers capped at MEMORY_CAP."""
    out = io.StringIO()
    results, peak = F.run(**F.FAST, named=False, extra=tuple(MEMORY_CASES), memory=MEMORY_CAP, out=out)
    return results, peak, out.getvalue() + "\n" + F.table(results, peak, MEMORY_CAP)


@contextmanager
def alarm(seconds: float):
    """Fail instead of hanging."""
    def ring(signum, frame):
        raise AssertionError(f"took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("name", list(PALETTE_CASES) + list(CALL_CASES))
def test_each_case_of_the_issue_gets_its_error_and_the_model_still_generates(name, ctx):
    expected = {**PALETTE_CASES, **CALL_CASES}[name]
    outcome, detail = F.run_case(CASES[name], ctx, check_model=False, timeout=30)
    assert outcome == expected, detail
    ctx.good_generate()   # the model still works


def test_fast_fuzz_subset_has_no_failures(capped_run):
    results, peak, report = capped_run
    assert len(results) == F.FAST["palettes"] + F.FAST["calls"] + len(MEMORY_CASES), report
    assert not [r for r in results if r.outcome in F.FAILURES], report
    assert peak < MEMORY_CAP, report


@pytest.mark.parametrize("name", list(MEMORY_CASES))
def test_memory_cases_are_refused_under_a_3_gib_cap(name, capped_run):
    results, _, report = capped_run
    (result,) = [r for r in results if r.name == name]
    assert result.outcome == MEMORY_CASES[name], report


def test_a_fifo_is_refused_before_it_is_opened(tmp_path, monkeypatch):
    good = Scene(64, 64, [Layer("a cat", np.ones((64, 64), bool))])
    good.save(tmp_path / "p")
    fifos = [tmp_path / "p" / "mask_1.png", tmp_path / "lonely.png", tmp_path / "fifo.zip"]
    for fifo in fifos:
        if fifo.exists():
            fifo.unlink()
        os.mkfifo(fifo)
    (tmp_path / "q").mkdir()
    os.mkfifo(tmp_path / "q" / "scene.json")
    fifos.append(tmp_path / "q" / "scene.json")
    opened = []
    real_os_open, real_open = os.open, builtins.open

    def spy(real):
        def opener(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)) and os.path.abspath(path) in map(str, fifos):
                opened.append(path)
                raise AssertionError(f"{path} was opened")
            return real(path, *args, **kwargs)
        return opener
    monkeypatch.setattr(os, "open", spy(real_os_open))
    monkeypatch.setattr(builtins, "open", spy(real_open))
    with alarm(10):
        for palette in (tmp_path / "p", tmp_path / "q", tmp_path / "fifo.zip"):
            with pytest.raises(SceneError, match="not a regular file"):
                Scene.load(palette)
        with pytest.raises(SceneError, match="not a regular file"):
            Scene(64, 64, [Layer("a cat", tmp_path / "lonely.png")]).validate()
    assert not opened


def test_mask_blur_is_refused_above_its_limit_and_capped_at_the_canvas_diagonal():
    mask = np.ones((64, 64), bool)
    assert Scene(64, 64, [Layer("a", mask, mask_blur=200)]).validate().layers[0].mask_blur == pytest.approx(
        np.hypot(64, 64))
    assert Scene(64, 64, [Layer("a", mask, mask_blur=12.5)]).validate().layers[0].mask_blur == 12.5
    with pytest.raises(SceneError, match=f"at most {scene_module.MAX_MASK_BLUR:g} px"):
        Scene(64, 64, [Layer("a", mask, mask_blur=scene_module.MAX_MASK_BLUR + 1)]).validate()


def test_limits_on_text_brushes_and_work_are_resource_errors():
    mask = np.ones((8, 8), bool)
    long = "a" * (scene_module.MAX_PROMPT_CHARS + 1)
    with pytest.raises(ResourceError, match="characters long"):
        Scene(64, 64, [Layer(long, mask)]).validate()
    with pytest.raises(ResourceError, match="characters long"):
        Scene(64, 64, [Layer("a", mask, name="n" * (scene_module.MAX_NAME_CHARS + 1))]).validate()
    with pytest.raises(ResourceError, match="at most 64 are allowed"):
        Scene(64, 64, [Layer("a", mask)] * (scene_module.MAX_BRUSHES + 1)).validate()
    with pytest.raises(ResourceError, match="too much work"):
        Scene(8192, 8192, [Layer("a", mask)] * 3).validate()
    with pytest.raises(ResourceError, match="nested more than"):
        Scene(64, 64, [Layer("a", mask)], extra={"x": json.loads("[" * 40 + "]" * 40)}).validate()
    loop: list = []
    loop.append(loop)
    with pytest.raises(ResourceError, match="nested more than"):
        Scene(64, 64, [Layer("a", mask)], extra={"x": loop}).validate()


def test_images_of_one_palette_share_a_decode_budget(tmp_path, monkeypatch):
    from PIL import Image
    good = Scene(64, 64, [Layer("a", np.ones((64, 64), bool)), Layer("b", np.ones((64, 64), bool))])
    good.save(tmp_path / "p")
    for name in ("mask_1.png", "mask_2.png"):
        Image.new("1", (256, 256), 1).save(tmp_path / "p" / name)
    monkeypatch.setattr(scene_module, "MAX_DECODED_PIXELS", 256 * 256 + 10)
    with pytest.raises(ResourceError, match="add up to more than"):
        Scene.load(tmp_path / "p")
    d = json.loads((tmp_path / "p" / "scene.json").read_text())
    d["layers"][1]["mask"] = "mask_1.png"   # the same file twice: decoded once
    (tmp_path / "p" / "scene.json").write_text(json.dumps(d))
    assert len(Scene.load(tmp_path / "p").layers) == 2


def test_an_encrypted_zip_member_is_refused_by_its_flag(tmp_path):
    Scene(64, 64, [Layer("a", np.ones((64, 64), bool))]).save(tmp_path / "p.zip")
    F.patch_zip(tmp_path / "p.zip", "mask_1.png", flags=0x1)
    with zipfile.ZipFile(tmp_path / "p.zip") as z:
        assert z.getinfo("mask_1.png").flag_bits & 0x1
    with pytest.raises(SceneError, match="encrypted"):
        Scene.load(tmp_path / "p.zip")


def test_saving_replaces_links_instead_of_writing_through_them(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    scene = Scene(64, 64, [Layer("a", np.ones((64, 64), bool))])
    scene.save(tmp_path / "p")
    (tmp_path / "p" / "mask_1.png").unlink()
    os.symlink(target, tmp_path / "p" / "mask_1.png")
    scene.save(tmp_path / "p")
    assert target.read_text() == "keep me" and not (tmp_path / "p" / "mask_1.png").is_symlink()
    assert Scene.load(tmp_path / "p").layers[0].mask.all()

