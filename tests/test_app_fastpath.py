"""The app's fast path (app_parts/fastpath.py): which compiler a server picks where, the background warm-up after
launch, ZeroGPU's ahead-of-time compile (one GPU task per model), and the page's "preparing" status."""
from __future__ import annotations

import torch

from app_parts import fastpath
from app_parts.models import Models
from app_parts.palette import STARTER
from app_parts.streaming import Live, status_text
from semantic_draw import SemanticDraw, StreamEvent
from semantic_draw.compiled import AheadOfTime
from scenes import rect_scene
from standins import StandInSpaces


def test_the_compiler_a_server_picks():
    spaces = StandInSpaces()
    assert fastpath.choose(None, "cpu", False) is None                  # tiny presets on a CPU: eager unless asked
    assert fastpath.choose(True, "cpu", False) == "jit"
    assert fastpath.choose(None, "cuda", False) == "jit"                # on CUDA: on by default
    assert fastpath.choose(None, "cuda:1", False) == "jit"
    assert fastpath.choose(False, "cuda", False) is None                # --no-compile
    assert fastpath.choose(None, None, False) == ("jit" if torch.cuda.is_available() else None)
    assert fastpath.choose(None, "cuda", True, spaces) == "aoti"        # ZeroGPU: ahead of time, never JIT
    assert fastpath.choose(True, "cuda", True, spaces) == "aoti"
    assert fastpath.choose(True, "cuda", True, object()) is None        # no aoti in that spaces package: eager
    assert fastpath.choose(False, "cuda", True, spaces) is None


def test_jit_warms_the_starter_palette_of_every_model_in_the_background():
    models = Models({"a": SemanticDraw.from_preset("tiny-sd15"), "b": SemanticDraw.from_preset("tiny-sd3")})
    shapes = fastpath.warm_shapes(models)
    assert shapes == [(name, [(128, 128)], (len(STARTER),), layout) for layout in ("latent", "attention")
                      for name in ("a", "b")]          # every model in the default layout before the other
    thread = fastpath.prepare(models, "jit")
    assert thread is not None and thread.daemon
    thread.join(timeout=300)
    assert not thread.is_alive()
    for _, model in models:
        assert model.counts.calls > 0                                   # a stream and a one-shot ran on each


def test_zero_gpu_compiles_ahead_of_time_in_one_gpu_task_per_model_and_layout():
    spaces = StandInSpaces()
    names = ("tiny-sd15", "tiny-sd3")
    models = Models({name: SemanticDraw.from_preset(name) for name in names})
    assert fastpath.prepare(models, "aoti", spaces_module=spaces, gpu=spaces.GPU) is None
    # one task per model and region layout, each with the most ZeroGPU grants
    assert spaces.durations == [fastpath.AOT_DURATION] * 2 * len(names) and 1 <= fastpath.AOT_DURATION <= 300
    assert spaces.compiled and all(inside for _, inside in spaces.compiled)   # every compile inside a GPU task
    for name in names:
        net = models[name].backbone.net
        assert isinstance(net, AheadOfTime)
        kinds = {p.regions for ps in net.programs.values() for p in ps}
        assert kinds == {False, True}                   # programs for both layouts' calls
    assert fastpath.prepare(models, None) is None


def test_a_model_whose_ahead_of_time_compile_fails_runs_eager_and_the_others_are_compiled():
    class Failing(StandInSpaces):
        def aoti_compile(self, exported):
            if len(self.durations) == 1:            # every compile of the first GPU task (tiny-sd15, latent)
                raise RuntimeError("out of GPU memory")
            return super().aoti_compile(exported)
    spaces = Failing()
    models = Models({name: SemanticDraw.from_preset(name) for name in ("tiny-sd15", "tiny-sdxl")})
    fastpath.prepare(models, "aoti", spaces_module=spaces, gpu=spaces.GPU)
    first, second = (models[name] for name in ("tiny-sd15", "tiny-sdxl"))
    assert len(spaces.durations) == 4                   # a failed compile costs only its calls: both layouts tried
    net = first.backbone.net
    assert net.failed and all("out of GPU memory" in why for why in net.failed)
    assert {p.regions for ps in net.programs.values() for p in ps} == {True}    # its attention layout's programs
    assert {p.regions for ps in second.backbone.net.programs.values() for p in ps} == {False, True}
    first.generate(rect_scene(64, 64), seed=0)          # still draws (eager where no program serves)
    assert net.fallbacks > 0


def test_a_model_whose_gpu_task_fails_is_not_asked_again_and_the_others_are_compiled():
    spaces = StandInSpaces()
    tasks = []

    def gpu(duration):
        def decorate(task):
            def run():
                tasks.append(duration)
                if len(tasks) == 1:                   # ZeroGPU ends the first task (its time is up, say)
                    raise RuntimeError("GPU task aborted")
                return spaces.GPU(duration=duration)(task)()
            return run
        return decorate
    models = Models({name: SemanticDraw.from_preset(name) for name in ("tiny-sd15", "tiny-sdxl")})
    fastpath.prepare(models, "aoti", spaces_module=spaces, gpu=gpu)
    first, second = (models[name] for name in ("tiny-sd15", "tiny-sdxl"))
    assert len(tasks) == 3                              # tiny-sd15's attention layout is not tried
    assert not isinstance(first.backbone.net, AheadOfTime) and isinstance(second.backbone.net, AheadOfTime)
    first.generate(rect_scene(64, 64), seed=0)          # still draws (eager)


def test_the_page_says_when_the_fast_path_is_being_prepared():
    event = StreamEvent("preparing", message="Preparing the fast path: the first frames of a new canvas size compile "
                                             "the network.")
    text = status_text(Live(event), new=False, notes=[])
    assert text.count("Preparing the fast path") == 1 and "a new canvas size compile the network" in text
    assert "Frames follow" in text
    assert "compiling the network" in status_text(Live(StreamEvent("preparing")), new=False, notes=[])


def test_the_layouts_to_prepare_come_from_the_command_line(capsys):
    import pytest

    import app
    assert app.parse_args([], environ={}).warm_regions == ("latent", "attention")
    assert app.parse_args(["--warm-regions", "attention"], environ={}).warm_regions == ("attention",)
    for bad in ("latent,latent", "sideways", ""):
        with pytest.raises(SystemExit):
            app.parse_args(["--warm-regions", bad], environ={})
    assert "expected region layouts" in capsys.readouterr().err
    spaces = StandInSpaces()
    models = Models({"tiny-sd15": SemanticDraw.from_preset("tiny-sd15")})
    fastpath.prepare(models, "aoti", spaces_module=spaces, gpu=spaces.GPU, layouts=("latent",))
    net = models["tiny-sd15"].backbone.net
    assert len(spaces.durations) == 1 and {p.regions for ps in net.programs.values() for p in ps} == {False}


def test_compile_ahead_prepares_every_model_and_layout_before_the_page_and_a_failure_stays_its_own(capsys):
    import pytest

    import app
    from semantic_draw import ResourceError
    with pytest.raises(SystemExit):
        app.parse_args(["--compile-ahead"], environ={})               # its programs need a folder
    assert "--compile-cache" in capsys.readouterr().err
    assert app.parse_args(["--compile-ahead", "--compile-cache", "/tmp/c"], environ={}).compile_ahead
    models = Models({name: SemanticDraw.from_preset(name) for name in ("tiny-sd15", "tiny-sd3")})
    asked = []

    def recorder(name, fails):
        def compile_ahead(folder, canvases, brushes, regions):
            asked.append((name, folder, canvases, brushes, regions))
            if fails:
                raise ResourceError("Could not compile the network ahead of time (export failed)")
            models[name].packages = type("P", (), {"loaded": 2, "compiled": 0})()
            failed = ["region calls of (2, 16, 16, 16): OSError"] if regions == ("attention",) else []
            return type("Net", (), {"failed": failed})()
        return compile_ahead
    models["tiny-sd15"].compile_ahead = recorder("tiny-sd15", True)
    models["tiny-sd3"].compile_ahead = recorder("tiny-sd3", False)
    done = fastpath.compile_ahead(models, "/tmp/c")
    # the failing model is not asked again for its second layout; the other gets both, latent first
    assert asked == [("tiny-sd15", "/tmp/c", [(128, 128)], (len(STARTER),), ("latent",)),
                     ("tiny-sd3", "/tmp/c", [(128, 128)], (len(STARTER),), ("latent",)),
                     ("tiny-sd3", "/tmp/c", [(128, 128)], (len(STARTER),), ("attention",))]
    assert done["tiny-sd15"] == "latent: failed" and done["tiny-sd3"].startswith("latent in ")
    assert "attention in " in done["tiny-sd3"] and done["tiny-sd3"].endswith("(1 kind(s) of call left as before)")
    assert "latent in " in done["tiny-sd3"] and "left as before" not in done["tiny-sd3"].split(",")[0]
