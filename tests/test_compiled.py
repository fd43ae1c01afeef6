"""The fast path (compiled.py): a compiled network gives the eager images, padding to buckets changes nothing, later
stream frames compile nothing, the cache folder round-trips, and bad options are clear errors.

Compiling a network with inductor on a CPU takes a minute or more per shape, so one test compiles for real (one
shape); the others check the plumbing with torch's "aot_eager" backend, which traces the same graphs without
generating code."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from analytic import AnalyticBackbone
from scenes import rect_scene
from semantic_draw import OptionError, SemanticDraw
from semantic_draw.denoiser import Wrapper
from standins import StandInSpaces

ROOT = Path(__file__).resolve().parents[1]


def one_brush(size=64):
    return rect_scene(size, size, [("a red apple", (8, 16, 56, 60))], background_prompt="a table")


class Bucketed(Wrapper):
    """An eager network that asks for its calls padded, as a compiled one does."""
    buckets = (8, 16, 32)


def test_padding_to_buckets_never_reaches_the_image():
    scene = rect_scene(64, 96, [("a red apple", (8, 16, 56, 80)), ("a cup", (0, 0, 32, 48))],
                       background_prompt="a table")
    backbone = AnalyticBackbone("sd15", channels=4)                 # a per-item network: bit for bit
    model = SemanticDraw(backbone)
    want = model.generate(scene, seed=0, output="latent")
    model.network = Bucketed(model.network)
    backbone.calls.clear()
    assert torch.equal(model.generate(scene, seed=0, output="latent"), want)
    assert len(set(backbone.calls)) == 1 and backbone.calls[0] >= 6   # every step one shape: the most a step has
    tiny = SemanticDraw.from_preset("tiny-sd15")                    # real kernels: the batch size moves the last bits
    want = tiny.generate(scene, seed=0, output="latent", regions="attention")
    tiny.network = Bucketed(tiny.network)
    torch.testing.assert_close(tiny.generate(scene, seed=0, output="latent", regions="attention"), want,
                               rtol=1e-4, atol=5e-5)


class SmallBuckets(Wrapper):
    buckets = (1, 2, 4, 8)


@pytest.mark.parametrize("regions, guidance", [("latent", 0.0), ("latent", 3.0), ("attention", 0.0)])
def test_one_shot_steps_of_one_call_keep_their_shape_and_larger_steps_pad_only_their_last_call(regions, guidance):
    from semantic_draw.denoiser import bucket
    from semantic_draw.plan import Plan
    rects = [(f"brush {i}", (0, 56 * i, 64, 56 * i + 80)) for i in range(5)]
    wide = rect_scene(64, 320, rects, background_prompt="a table")        # tiled: many items per step
    small = rect_scene(64, 64, [("a red apple", (8, 16, 56, 60))], background_prompt="a table")
    # the latent layout on a per-item network (bit for bit); the attention layout needs a real one
    model = SemanticDraw(AnalyticBackbone("sd15", channels=4)) if regions == "latent" else \
        SemanticDraw.from_preset("tiny-sd15")
    recorded = model.network = Recorded(model.network)
    built, original = [], Plan.__post_init__
    for scene, tile in ((wide, 64), (small, None)):
        def run():
            recorded.sizes = []
            ends = []
            z = model.generate(scene, seed=0, output="latent", batch_size=8, tile_size=tile, regions=regions,
                               guidance=guidance, callback=lambda info: ends.append(len(recorded.sizes)))
            return z, [recorded.sizes[a:b] for a, b in zip([0] + ends, ends)]
        want, eager = run()
        model.network = SmallBuckets(recorded)
        try:
            Plan.__post_init__ = lambda self: (original(self), built.append(self))[0]
            got, padded = run()
        finally:
            Plan.__post_init__ = original
            model.network = recorded
        torch.testing.assert_close(got, want, rtol=0 if regions == "latent" else 1e-4,
                                   atol=0 if regions == "latent" else 5e-5)     # padding never reaches the image
        plan = built[-1]
        factor = 2 if guidance else 1           # full CFG: every view twice in the call
        for i, (e, p) in enumerate(zip(eager, padded)):
            most = factor * plan.most_items(torch.tensor([i]), model.step_options().bootstrap_steps)
            if most <= 8:       # one call: the step's own shape, whatever is painted
                assert p == [most] * len(e)
            else:               # full calls of 8, the last one in its bucket
                assert p == [bucket(n, (1, 2, 4, 8)) for n in e] and e[:-1] == [8] * (len(e) - 1)
        if tile:
            assert any(len(e) > 1 for e in eager)
            assert sum(map(sum, padded)) < sum(8 * len(e) for e in eager)   # less than padding to full calls
        else:
            assert len({p[0] for p in padded}) == (1 if regions == "latent" else 2)


class Recorded(Wrapper):
    """Records the batch size of every network call."""

    def __init__(self, inner):
        super().__init__(inner)
        self.sizes = []

    def predict(self, views):
        self.sizes.append(len(views))
        return self.inner.predict(views)


def test_a_padded_stream_calls_the_network_with_two_batches_the_most_its_layout_can_have():
    three = rect_scene(64, 64, [("a red apple", (8, 8, 30, 30)), ("a cup", (34, 34, 60, 60)),
                                ("a pear", (8, 34, 30, 60))], background_prompt="a table")
    shapes = {}
    for regions in ("latent", "attention"):
        model = SemanticDraw.from_preset("tiny-sd15")
        recorded = Recorded(model.network)
        model.network = Bucketed(recorded)
        with model.stream(three, seed=0, regions=regions) as session:
            for _ in range(3):                                   # the filling frame and two steady ones
                session.next_frame(output="latent")
            session.edit_layer(1, mask=three.layers[1].mask[::-1, ::-1].copy())   # paint moves: same shape
            wiped = three.layers[2].mask.copy()
            wiped[12:] = False
            session.edit_layer(2, mask=wiped)                                     # a brush mostly wiped: same shape
            for _ in range(2):
                session.next_frame(output="latent")
            T, boot = session.schedule.steps, session.opts.bootstrap_steps
            whole = session.plan.most_items(torch.arange(T), boot)           # a frame with a slot at step 0
            in_flight = session.plan.most_items(torch.arange(1, T), boot)    # the slots in flight
        assert set(recorded.sizes) == {whole, in_flight}, (regions, recorded.sizes)
        shapes[regions] = in_flight
    assert shapes["latent"] > shapes["attention"]       # the attention layout: one whole view per slot


def test_padding_on_the_device_is_indexing_by_the_last_item():
    from semantic_draw.denoiser import Regions, Views
    n, size = 3, 8
    views = Views(torch.randn(n, 4, 8, 8), torch.arange(n), None, {"embeds": torch.randn(n, 5, 16)}, torch.randn(n, 2),
                  carried=torch.randn(n, 4, 8, 8),
                  regions=Regions(torch.rand(n, 2, 8, 8), {"embeds": torch.randn(1, 2, 5, 16)},
                                  alone=torch.tensor([-1, 0, 1])))
    index = torch.tensor([0, 1, 2, 2, 2, 2, 2, 2])
    padded, indexed = views.pad(size), views[index]
    for a, b in [(padded.x, indexed.x), (padded.step, indexed.step), (padded.crops, indexed.crops),
                 (padded.cond["embeds"], indexed.cond["embeds"]), (padded.carried, indexed.carried),
                 (padded.regions.weights, indexed.regions.weights), (padded.regions.alone, indexed.regions.alone)]:
        assert torch.equal(a, b)
    assert len(views.pad(2)) == n                                # never cut


@pytest.fixture
def fresh_dynamo():
    """Graph counts from an empty dynamo cache: dynamo serves a model of an architecture it compiled before (in an
    earlier test) from the graph it has, so counts would depend on the order tests run in."""
    torch._dynamo.reset()
    yield


@pytest.mark.parametrize("shapes", ["static", "dynamic"])
def test_compiled_streams_give_the_eager_frames_and_later_frames_compile_nothing(shapes, fresh_dynamo):
    scene = one_brush()
    eager = SemanticDraw.from_preset("tiny-sd15")
    with eager.stream(scene, seed=0) as session:
        want = [session.next_frame(output="latent") for _ in range(3)]
    model = SemanticDraw.from_preset("tiny-sd15").compile(backend="aot_eager", shapes=shapes)
    with model.stream(scene, seed=0) as session:
        got = [session.next_frame(output="latent")]
        assert session.stats()["graphs_compiled_last_frame"] >= 1        # the first frame compiled, and says so
        got += [session.next_frame(output="latent") for _ in range(2)]
        compiles = model.compiled.compiles
        assert session.stats()["graphs_compiled"] == compiles
        # two shapes: a frame with a slot at step 0, and the slots in flight; one graph for both when dynamic
        assert compiles == (2 if shapes == "static" else 1)
        assert len({s[0] for s in model.compiled.shapes}) == compiles
        for _ in range(3):
            session.next_frame(output="latent")
            assert session.stats()["graphs_compiled_last_frame"] == 0
        assert model.compiled.compiles == compiles                   # the second frame on: no recompilation
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    model.generate(scene, seed=0, regions="attention", guidance=3.0)
    assert model.compiled.shapes and all(s[0] in model.compiled.buckets for s in model.compiled.shapes)


@pytest.mark.parametrize("preset", ["tiny-sd15", "tiny-sdxl", "tiny-sd3"])
@pytest.mark.parametrize("regions", ["latent", "attention"])
def test_every_family_compiled_gives_the_eager_one_shots_and_frames(preset, regions):
    scene = rect_scene(64, 64, [("a red apple", (8, 16, 56, 40)), ("a cup", (0, 30, 40, 64))],
                       background_prompt="a table")
    eager = SemanticDraw.from_preset(preset)
    model = SemanticDraw.from_preset(preset).compile(backend="aot_eager")     # dynamo's graphs, no code generated
    torch.testing.assert_close(model.generate(scene, seed=3, output="latent", regions=regions),
                               eager.generate(scene, seed=3, output="latent", regions=regions), rtol=1e-4, atol=1e-4)
    with model.stream(scene, seed=3, regions=regions) as session, \
            eager.stream(scene, seed=3, regions=regions) as want:
        for _ in range(3):
            torch.testing.assert_close(session.next_frame(output="latent"), want.next_frame(output="latent"),
                                       rtol=1e-4, atol=1e-4)
        assert session.stats()["graphs_compiled_last_frame"] == 0
    # the calls went through torch.compile (how many graphs it made depends on what earlier tests compiled: dynamo
    # serves a model of the same architecture with a graph it already has)
    assert model.compiled is not None and model.backbone.net is not model.backbone.denoiser


def test_dynamic_shapes_serve_new_brush_counts_and_one_shots_of_a_canvas_without_compiling(fresh_dynamo):
    scenes = [rect_scene(64, 64, [(f"brush {i}", (0, 12 * i, 64, 12 * i + 20)) for i in range(k)],
                         background_prompt="a table") for k in (1, 2, 4)]
    counts = {}
    for shapes in ("static", "dynamic"):
        torch._dynamo.reset()
        model = SemanticDraw.from_preset("tiny-sd15").compile(backend="aot_eager", shapes=shapes)
        eager = SemanticDraw.from_preset("tiny-sd15")
        for scene in scenes:
            with model.stream(scene, seed=1) as session:
                for _ in range(2):
                    session.next_frame(output="latent")
            got = model.generate(scene, seed=1, output="latent")
            torch.testing.assert_close(got, eager.generate(scene, seed=1, output="latent"), rtol=1e-4, atol=1e-4)
        counts[shapes] = model.compiled.compiles
    # every batch size of the canvas (all above 1 here) in one graph, or two where the network's own code branches
    # on the batch size (torch's CPU convolution at 16 items on some canvases, diffusers' upsampler at 64)
    assert counts["dynamic"] <= 2
    assert counts["static"] >= 4           # one per batch size
    attention = {}
    for shapes in ("static", "dynamic"):       # the attention layout: its region context's batch sizes too
        torch._dynamo.reset()
        model = SemanticDraw.from_preset("tiny-sd15").compile(backend="aot_eager", shapes=shapes)
        eager = SemanticDraw.from_preset("tiny-sd15")
        scene = scenes[1]
        with model.stream(scene, seed=1, regions="attention") as session, \
                eager.stream(scene, seed=1, regions="attention") as want:
            for _ in range(3):
                torch.testing.assert_close(session.next_frame(output="latent"), want.next_frame(output="latent"),
                                           rtol=1e-4, atol=1e-4)
        model.generate(scene, seed=1, output="latent", regions="attention")
        attention[shapes] = model.compiled.compiles
    assert attention["dynamic"] <= 2 < attention["static"]     # one graph for the batches, one for single items
    with pytest.raises(OptionError, match="shapes"):
        SemanticDraw.from_preset("tiny-sd15").compile(backend="aot_eager", shapes="some")
    with pytest.raises(OptionError, match="shapes"):
        SemanticDraw.from_preset("tiny-sd15", compile=True, compile_shapes="static-ish")


@pytest.mark.parametrize("preset", ["tiny-sd15", "tiny-sdxl", "tiny-sd3"])
def test_the_attention_layout_serves_every_brush_count_from_the_graphs_of_the_first(preset, fresh_dynamo):
    # the prompt-slot count is a dynamic size of the region context and the processors do not loop over it, so
    # adding brushes while painting compiles nothing (it took a new graph per count before: a minute on a GPU)
    model = SemanticDraw.from_preset(preset).compile(backend="aot_eager")
    eager = SemanticDraw.from_preset(preset)
    graphs = []
    for k in (1, 2, 4, 7):            # 2 to 8 prompt slots; 8 makes SD3's bias rows a multiple of 8 long
        scene = rect_scene(64, 64, [(f"brush {i}", (0, 8 * i, 64, 8 * i + 20)) for i in range(k)],
                           background_prompt="a table")
        with model.stream(scene, seed=1, regions="attention") as session, \
                eager.stream(scene, seed=1, regions="attention") as want:
            for _ in range(3):
                torch.testing.assert_close(session.next_frame(output="latent"), want.next_frame(output="latent"),
                                           rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.generate(scene, seed=1, output="latent", regions="attention"),
                                   eager.generate(scene, seed=1, output="latent", regions="attention"),
                                   rtol=1e-4, atol=1e-4)
        graphs.append(model.compiled.compiles)
    assert graphs[0] > 0 and graphs == [graphs[0]] * 4
    static = SemanticDraw.from_preset(preset).compile(backend="aot_eager", shapes="static")
    for k in (1, 2):                  # static shapes: each prompt count compiles again
        scene = rect_scene(64, 64, [(f"brush {i}", (0, 8 * i, 64, 8 * i + 20)) for i in range(k)],
                           background_prompt="a table")
        static.generate(scene, seed=1, output="latent", regions="attention")
        graphs.append(static.compiled.compiles)
    assert graphs[-1] > graphs[-2]


def test_the_decoders_are_compiled_too_and_decode_the_same_pictures():
    import numpy as np
    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    model = SemanticDraw.from_preset("tiny-sd15")
    want = [np.asarray(model.decode(latent, tiny=t), dtype=np.int16) for t in (True, False)]
    model.compile(backend="eager")          # dynamo's tracing alone (inductor takes minutes for a VAE on a CPU)
    assert hasattr(model.backbone.tiny_vae.decoder, "_orig_mod") and hasattr(model.backbone.pipe.vae.decoder,
                                                                             "_orig_mod")
    got = [np.asarray(model.decode(latent, tiny=t), dtype=np.int16) for t in (True, False)]
    for a, b in zip(want, got):
        assert np.abs(a - b).max() <= 1                                  # 8-bit pictures: at most one level apart
    debug = SemanticDraw.from_preset("tiny-sd15").compile(backend="aot_eager")   # a debugging backend: eager decoders
    assert not hasattr(debug.backbone.tiny_vae.decoder, "_orig_mod")
    assert np.abs(np.asarray(debug.decode(latent, tiny=True), dtype=np.int16) - want[0]).max() <= 1


def test_warm_compiles_the_shapes_before_anyone_waits(monkeypatch):
    model = SemanticDraw.from_preset("tiny-sd15").compile(backend="aot_eager")
    seen = []
    seconds = model.warm(canvases=[(64, 64)], brushes=(1, 2), progress=lambda *a: seen.append(a))
    assert seconds > 0 and [s[:2] for s in seen] == [(1, 2), (2, 2)]
    compiles = model.compiled.compiles
    with model.stream(rect_scene(64, 64, [("x", (0, 0, 32, 32)), ("y", (32, 32, 64, 64))]), seed=5) as session:
        for _ in range(3):
            session.next_frame(output="latent")
    assert model.compiled.compiles == compiles


def test_compiling_where_it_cannot_run_is_an_option_error(monkeypatch):
    from semantic_draw import compiled
    model = SemanticDraw.from_preset("tiny-sd15")
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    with pytest.raises(OptionError, match="C\\+\\+ compiler"):
        model.compile()
    with pytest.raises(OptionError, match="not on meta"):
        compiled.check_compilable(torch.device("meta"))
    with pytest.raises(OptionError, match="compile"):
        SemanticDraw.from_preset("tiny-sd15", compile="yes")
    assert model.compiled is None and model.backbone.net is model.backbone.denoiser


@pytest.mark.skipif(not any(os.path.exists(p) for p in ("/usr/bin/g++", "/usr/bin/c++")), reason="needs a C++ compiler")
def test_inductor_compiles_one_shape_and_the_cache_folder_warms_a_new_process(tmp_path):
    scene = one_brush()
    eager = SemanticDraw.from_preset("tiny-sd15").generate(scene, seed=0, output="latent")
    model = SemanticDraw.from_preset("tiny-sd15", compile=True, compile_cache=str(tmp_path))
    got = model.generate(scene, seed=0, output="latent")      # every step: 2 items, one bucket, one graph
    torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-4)
    assert model.compiled.compiles == 1 and model.compiled.mode is None
    files = sorted(tmp_path.glob("compile-sd15-*.bin"))
    assert files and any((tmp_path / "inductor").iterdir()), "nothing was cached in the folder"
    # A new process on the same folder: it loads the artifacts, finds inductor's code there, gives the same latent.
    script = ("import sys, torch; sys.path[:0] = [%r, %r]\n"
              "from scenes import rect_scene\nfrom semantic_draw import SemanticDraw\n"
              "m = SemanticDraw.from_preset('tiny-sd15', compile=True, compile_cache=%r)\n"
              "z = m.generate(rect_scene(64, 64, [('a red apple', (8, 16, 56, 60))], background_prompt='a table'),"
              " seed=0, output='latent')\n"
              "torch.save(z, %r); print('loaded', m.compiled.cache_loaded)\n"
              % (str(ROOT), str(ROOT / "tests"), str(tmp_path), str(tmp_path / "z.pt")))
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"loaded {len(files)}" in out.stdout
    torch.testing.assert_close(torch.load(tmp_path / "z.pt"), got, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny-sd15", "tiny-sdxl", "tiny-sd3"])
def test_zero_gpu_chooses_ahead_of_time_compilation_and_serves_its_shapes(preset):
    from semantic_draw import compiled
    spaces = StandInSpaces()
    assert compiled.fast_path(True, spaces) == "aoti"
    assert compiled.fast_path(False, spaces) == "jit" and compiled.fast_path(True, object()) == "jit"
    model = SemanticDraw.from_preset(preset)
    scene = one_brush()
    three = rect_scene(64, 64, [(f"brush {i}", (0, 20 * i, 64, 20 * i + 24)) for i in range(3)],
                       background_prompt="a table")
    eager = [model.generate(s, seed=0, output="latent") for s in (scene, three)]
    with model.stream(three, seed=0) as session:
        frames = [session.next_frame(output="latent") for _ in range(3)]
    net = compiled.compile_ahead_of_time(model, spaces, canvases=[(64, 64)], brushes=(1,))
    assert spaces.compiled and model.backbone.net is net and net.fallbacks == 0
    exported = [e for e, _ in spaces.compiled]
    plain = [p for ps in net.programs.values() for p in ps if not p.regions]
    assert 1 <= len(plain) <= 2 and len(exported) == sum(len(ps) for ps in net.programs.values())   # few programs
    got = model.generate(scene, seed=0, output="latent")               # the warmed shapes: programs only
    torch.testing.assert_close(got, eager[0], rtol=1e-4, atol=1e-4)
    assert spaces.runs > 0 and net.fallbacks == 0
    runs = spaces.runs
    # three brushes were never captured: their batch sizes are served by the dynamic program all the same
    torch.testing.assert_close(model.generate(three, seed=0, output="latent"), eager[1], rtol=1e-4, atol=1e-4)
    with model.stream(three, seed=0) as session:
        for want in frames:
            torch.testing.assert_close(session.next_frame(output="latent"), want, rtol=1e-4, atol=1e-4)
    assert net.fallbacks == 0 and spaces.runs > runs
    model.generate(rect_scene(64, 96, [("x", (0, 0, 32, 32))]), seed=0)   # a wider canvas: 64 px views again
    assert net.fallbacks == 0
    model.generate(rect_scene(128, 128, [("x", (0, 0, 32, 32))]), seed=0, tile_size=128)   # other views: eager
    assert net.fallbacks > 0


@pytest.mark.parametrize("preset", ["tiny-sd15", "tiny-sdxl", "tiny-sd3"])
def test_zero_gpu_serves_the_attention_layout_at_every_brush_count_from_the_programs_of_one(preset):
    from semantic_draw import compiled
    spaces = StandInSpaces()
    model, eager = SemanticDraw.from_preset(preset), SemanticDraw.from_preset(preset)
    net = compiled.compile_ahead_of_time(model, spaces, canvases=[(64, 64)], brushes=(1,))
    assert {p.regions for ps in net.programs.values() for p in ps} == {False, True} and net.fallbacks == 0
    runs = spaces.runs
    for k in (1, 3, 5):            # 2 to 6 prompt slots: only 2 were exported
        scene = rect_scene(64, 64, [(f"brush {i}", (0, 12 * i, 64, 12 * i + 20)) for i in range(k)],
                           background_prompt="a table")
        torch.testing.assert_close(model.generate(scene, seed=1, output="latent", regions="attention"),
                                   eager.generate(scene, seed=1, output="latent", regions="attention"),
                                   rtol=1e-4, atol=1e-4)
        with model.stream(scene, seed=1, regions="attention") as session, \
                eager.stream(scene, seed=1, regions="attention") as want:
            for _ in range(3):
                torch.testing.assert_close(session.next_frame(output="latent"), want.next_frame(output="latent"),
                                           rtol=1e-4, atol=1e-4)
            edited = [replace(layer, mask_blur=2.0) for layer in scene.layers]     # a painting frame
            session.update(replace(scene, layers=edited))
            want.update(replace(scene, layers=edited))
            torch.testing.assert_close(session.next_frame(output="latent"), want.next_frame(output="latent"),
                                       rtol=1e-4, atol=1e-4)
    assert net.fallbacks == 0 and spaces.runs > runs       # every call ran a program
    model.generate(rect_scene(48, 48), seed=0, regions="attention")      # views of another size: eager, counted
    assert net.fallbacks > 0
    # called again (more canvases), it keeps the programs it has and adds what they do not serve
    before = {view: list(ps) for view, ps in net.programs.items()}
    again = compiled.compile_ahead_of_time(model, spaces, canvases=[(64, 64), (48, 48)], brushes=(1,))
    assert all(p in again.programs[view] for view, ps in before.items() for p in ps)
    assert len(again.programs) > len(before)


def test_a_compiler_that_fails_leaves_those_calls_eager_and_says_so(fresh_dynamo):
    """torch.compile's compiler crashing (out of GPU shared memory, say) on a kind of call: that kind runs eager
    from then on, logged and counted in the stream's stats, instead of every frame failing (and compiling again)."""
    tries = []

    def failing(gm, inputs):
        tries.append(1)
        raise RuntimeError("out of shared memory")
    model = SemanticDraw.from_preset("tiny-sd15").compile(backend=failing)
    eager = SemanticDraw.from_preset("tiny-sd15")
    scene = one_brush()
    torch.testing.assert_close(model.generate(scene, seed=0, output="latent"),
                               eager.generate(scene, seed=0, output="latent"), rtol=1e-5, atol=1e-5)
    failures = dict(model.compiled.failures)
    assert failures and all("out of shared memory" in why for why in failures.values())
    assert model.compiled.compiles == 0
    with model.stream(scene, seed=0) as session, eager.stream(scene, seed=0) as want:
        for _ in range(3):
            a, b = np.asarray(session.next_frame()), np.asarray(want.next_frame())    # the tiny VAE's decode too
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        assert session.stats()["compile_failures"] == len(model.compiled.failures) >= len(failures)
    assert model.backbone.tiny_vae.decoder.failures                     # the decoders' compiles failed as well
    a, b = np.asarray(model.generate(scene, seed=0)), np.asarray(eager.generate(scene, seed=0))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1 and model.backbone.pipe.vae.decoder.failures
    tried = len(tries)
    model.generate(scene, seed=0)
    with model.stream(scene, seed=0) as session:
        session.next_frame()
    assert len(tries) == tried                        # nothing is compiled again for what failed once
    with eager.stream(scene, seed=0) as session:
        assert session.stats()["compile_failures"] is None


def test_a_call_that_cannot_be_compiled_ahead_costs_only_itself():
    """One kind of call whose compile fails (out of memory or disk, say) runs as before; the others get their
    programs, and the result says which failed and why."""
    from semantic_draw import compiled

    class RegionsFail(StandInSpaces):
        full = True

        def aoti_compile(self, exported):
            if self.full and "Regions" in str(exported.call_spec.in_spec):      # an attention-layout call's program
                raise OSError("No space left on device")
            return super().aoti_compile(exported)
    spaces = RegionsFail()
    model, eager = SemanticDraw.from_preset("tiny-sd15"), SemanticDraw.from_preset("tiny-sd15")
    net = compiled.compile_ahead_of_time(model, spaces, canvases=[(64, 64)], brushes=(1,))
    assert net.failed and all("region calls" in why and "No space left" in why for why in net.failed)
    assert {p.regions for ps in net.programs.values() for p in ps} == {False}      # the plain calls' programs
    scene = one_brush()
    torch.testing.assert_close(model.generate(scene, seed=0, output="latent"),
                               eager.generate(scene, seed=0, output="latent"), rtol=1e-4, atol=1e-4)
    assert net.fallbacks == 0
    torch.testing.assert_close(model.generate(scene, seed=0, output="latent", regions="attention"),
                               eager.generate(scene, seed=0, output="latent", regions="attention"),
                               rtol=1e-4, atol=1e-4)
    assert net.fallbacks > 0                          # the failed kind of call: the eager module, counted
    spaces.full = False                               # room again: called once more, it compiles what failed
    again = compiled.compile_ahead_of_time(model, spaces, canvases=[(64, 64)], brushes=(1,))
    assert not again.failed and {p.regions for ps in again.programs.values() for p in ps} == {False, True}
    again.fallbacks = 0
    model.generate(scene, seed=0, output="latent", regions="attention")
    assert again.fallbacks == 0


def test_zero_gpu_exports_another_program_past_a_batch_size_where_the_network_branches():
    from semantic_draw import compiled
    from semantic_draw.warm import warm_scene
    spaces = StandInSpaces()
    model = SemanticDraw.from_preset("tiny-sd15")
    net = compiled.compile_ahead_of_time(model, spaces, canvases=[(128, 128)], brushes=(3,))   # 9 views a slot
    ranges = sorted(p.batches for p in net.programs[(4, 8, 8)] if not p.regions)
    assert len(ranges) >= 2 and ranges[0][0] <= 2 and ranges[-1][1] >= 64
    with model.stream(warm_scene(128, 128, 3), seed=0) as session:       # calls of more than 63 items, and fewer
        for _ in range(3):
            session.next_frame(output="latent")
    assert net.fallbacks == 0


def test_zero_gpu_static_programs_serve_only_their_own_batch_sizes():
    from semantic_draw import compiled
    spaces = StandInSpaces()
    model = SemanticDraw.from_preset("tiny-sd15")
    net = compiled.compile_ahead_of_time(model, spaces, canvases=[(64, 64)], brushes=(1,), dynamic=False)
    sizes = sorted(p.batches[0] for ps in net.programs.values() for p in ps if p.batches[0] == p.batches[1])
    assert len(sizes) == len(spaces.compiled) >= 2            # one program per captured batch size
    model.generate(one_brush(), seed=0, output="latent")
    assert net.fallbacks == 0
    three = rect_scene(64, 64, [(f"brush {i}", (0, 20 * i, 64, 20 * i + 24)) for i in range(3)])
    model.generate(three, seed=0, output="latent")           # other batch sizes: eager, and counted
    assert net.fallbacks > 0


def test_a_stream_says_it_prepares_the_fast_path_only_when_its_first_frames_compile(fresh_dynamo):
    def opening(model, scene, regions="latent"):
        """Whether the stream said "preparing", after checking that it said so exactly when it compiled."""
        before = model.compiled.compiles if model.compiled is not None else 0
        with model.stream(scene, seed=0, regions=regions) as session:
            said = [e.kind for e in session.run(frames=2, every_frame=True)][:1] == ["preparing"]
        compiled = model.compiled is not None and model.compiled.compiles > before
        assert said == compiled
        return said

    one, two = (rect_scene(64, 64, [(f"brush {i}", (0, 16 * i, 64, 16 * i + 24)) for i in range(k)],
                             background_prompt="a table") for k in (1, 2))
    assert not opening(SemanticDraw.from_preset("tiny-sd15"), one)              # eager: nothing to prepare
    model = SemanticDraw.from_preset("tiny-sd15").compile(backend="aot_eager")
    assert opening(model, one)                          # a new canvas: compiles
    assert not opening(model, one)                      # the same again: served
    assert not opening(model, two)                      # dynamic shapes: another brush count is served too
    assert opening(model, one, regions="attention")     # another region layout: compiles
    assert not opening(model, two, regions="attention")
    assert opening(model, rect_scene(48, 48))           # a smaller canvas: views of another size
    opening(model, rect_scene(64, 96))     # tiled, views of a size served before: says so if its batches compile
    static = SemanticDraw.from_preset("tiny-sd15").compile(backend="aot_eager", shapes="static")
    assert opening(static, one) and not opening(static, one)
    assert opening(static, two)                         # static shapes: a new brush count is a new shape
