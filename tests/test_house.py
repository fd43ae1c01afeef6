"""The seams of the house: the family registry, the denoiser wrappers, the noise source, the error kinds."""
from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from analytic import AnalyticBackbone
from scenes import rect_scene
from semantic_draw import (Background, LoadError, OptionError, ResourceError, Scene, SceneError, SemanticDraw,
                           SemanticDrawError, SessionClosedError)
from semantic_draw.backbones import SD15Backbone, family_of, get_family, register, unregister
from semantic_draw.denoiser import Batched, Counted, FullGuidance, ModelDenoiser, Timed, Views
from semantic_draw.noise import NoiseSource
from semantic_draw.timing import Clock
from semantic_draw.tiny import build_tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]


# -- a fourth family: one adapter class and one registry entry ------------------------------------------------------
class ToyBackbone(SD15Backbone):
    family = "toy"


class ToyDiffusionPipeline(StableDiffusionPipeline):
    """The tiny SD1.5 parts under another pipeline class, as a new family's pipelines would come."""


@pytest.fixture
def toy_family():
    register(dataclasses.replace(get_family("sd15"), adapter=ToyBackbone, pipeline="ToyDiffusionPipeline",
                                 pipeline_prefixes=("Toy",), detect=None, single_file=None))
    yield get_family("toy")
    unregister("toy")


def toy_pipeline():
    parts = build_tiny_pipeline("sd15")
    pipe = ToyDiffusionPipeline(**parts.components)
    pipe.tiny_vae = parts.tiny_vae
    return pipe


def test_a_registered_fourth_family_generates_and_streams_with_no_other_change(toy_family):
    pipe = toy_pipeline()
    assert family_of(pipe) == "toy"
    toy = SemanticDraw.from_pipeline(pipe)
    assert toy.family == "toy" and isinstance(toy.backbone, ToyBackbone)
    assert toy.settings == toy_family.sampler and toy.backbone.cover_alpha == toy_family.cover_alpha
    scene = rect_scene(64, 96, [("a red apple", (8, 16, 56, 80))], background_prompt="a table")
    image = toy.generate(scene, seed=3)
    assert image.size == (96, 64)
    # The same weights as SD1.5 give the same picture: nothing but the registry decides what a family does.
    sd15 = SemanticDraw.from_pipeline(build_tiny_pipeline("sd15"))
    assert np.array_equal(np.asarray(image), np.asarray(sd15.generate(scene, seed=3)))
    reference = toy.generate(scene, seed=3, method="multidiffusion")
    assert reference.size == (96, 64) and toy.calls >= 50
    with toy.stream(scene, seed=1) as session:
        assert session.next_frame().size == (96, 64)
        before = [session.next_frame(output="latent") for _ in range(2)]
        session.edit_layer(0, prompt="a green pear")
        edited = session.next_frame(output="latent")
    assert not torch.allclose(edited, before[-1], atol=1e-5)


def test_an_unregistered_family_is_a_clear_error():
    with pytest.raises(LoadError, match="not a pipeline"):
        family_of(object())
    with pytest.raises(OptionError, match="Unknown model family"):
        get_family("flux")


def test_no_module_outside_backbones_compares_family_names():
    names = "|".join(["sd15", "sdxl", "sd3"])
    comparison = re.compile(rf"""(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=)|in\s*\(\s*["']({names})["']""")
    files = [*ROOT.glob("semantic_draw/**/*.py"), *ROOT.glob("app_parts/*.py"), ROOT / "app.py",
             *ROOT.glob("bench/*.py")]
    offenders = [f"{path.relative_to(ROOT)}:{i}" for path in files if "backbones" not in path.parts
                 for i, line in enumerate(path.read_text().splitlines(), 1) if comparison.search(line)]
    assert files and not offenders, offenders


# -- denoiser wrappers -------------------------------------------------------------------------------------------------
def views_of(model, n=5, guidance=False):
    sched = model.schedule(model.settings)
    cond = model.encode_prompts([f"prompt {i}" for i in range(n)])
    uncond = model.encode_prompts([""] * n) if guidance else None
    x = torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return Views(x, torch.arange(n) % sched.steps, sched, cond, torch.zeros(n, 2), uncond)


def test_full_guidance_mixes_the_raw_predictions_in_one_doubled_call():
    backbone = AnalyticBackbone("sd15", channels=4)
    model = SemanticDraw(backbone)
    views = views_of(model, guidance=True)
    counted = Counted(ModelDenoiser(backbone))
    guided = FullGuidance(counted, 4.0)
    out = guided.predict(views)
    plain = ModelDenoiser(backbone)
    u = plain.predict(dataclasses.replace(views, cond=views.uncond))
    c = plain.predict(views)
    assert torch.allclose(out, u + 4.0 * (c - u))
    assert (counted.counts.calls, counted.counts.items) == (1, 10) and guided.fanout == 2
    x0, eps = guided(views)    # __call__ turns the guided prediction into (x0_hat, eps_hat) once
    assert torch.allclose(eps, out) and x0.shape == views.x.shape


def test_batching_counts_network_items_and_gives_the_same_prediction():
    backbone = AnalyticBackbone("sd15", channels=4)
    model = SemanticDraw(backbone)
    views = views_of(model, n=7, guidance=True)
    whole = FullGuidance(ModelDenoiser(backbone), 2.0).predict(views)
    counted = Counted(ModelDenoiser(backbone))
    backbone.calls.clear()
    chunks = Batched(FullGuidance(counted, 2.0), batch_size=4).predict(views)
    assert torch.allclose(chunks, whole, atol=1e-6)
    assert backbone.calls == [4, 4, 4, 2] and counted.counts.items == 14   # 2 views (4 network items) per call


def test_out_of_memory_for_a_single_view_is_a_resource_error():
    backbone = AnalyticBackbone("sd15", channels=4)
    model = SemanticDraw(backbone)

    def no_memory(x, t, cond, crops=None):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    backbone.model_output = no_memory
    with pytest.raises(ResourceError, match="Out of memory"):
        Batched(ModelDenoiser(backbone), 8).predict(views_of(model, n=3))


def test_timed_wrapper_adds_up_the_time_inside_and_the_model_counts_through_its_chain():
    backbone = AnalyticBackbone("sd15", channels=4)
    model = SemanticDraw(backbone)
    clock = Clock("cpu")
    model.network = Timed(model.network, clock, "model")
    model.generate(rect_scene(64, 64), seed=0)
    spent = clock.take("model", "decode")
    assert spent["model"] > 0 and spent["decode"] == 0 and clock.take() == {}
    assert model.calls == len(backbone.calls) > 0 and model.items == sum(backbone.calls)


def test_sessions_share_the_model_lock_and_counts():
    backbone = AnalyticBackbone("sd15", channels=4)
    model = SemanticDraw(backbone)
    scene = rect_scene(64, 64)
    sessions = [model.stream(scene, seed=i) for i in range(3)]
    threads = [threading.Thread(target=lambda s=s: [s.next_frame(output="latent") for _ in range(4)]) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = model.schedule(model.settings).steps
    assert model.calls == len(backbone.calls) == 3 * (steps + 3)   # each first frame walks every step


# -- noise and errors --------------------------------------------------------------------------------------------------
def test_one_noise_source_per_seed_in_a_fixed_order():
    a, b = NoiseSource(5, "cpu"), NoiseSource(5, "cpu")
    assert torch.equal(a.draw((2, 3)), b.draw((2, 3))) and torch.equal(a.draw((4,)), b.draw((4,)))
    assert not torch.equal(NoiseSource(6, "cpu").draw((2, 3)), NoiseSource(5, "cpu").draw((2, 3)))
    assert NoiseSource(np.int64(7), "cpu").seed == 7
    for bad in (1.5, "3", None, -1, 2 ** 64, True, [1]):
        with pytest.raises(OptionError, match="seed"):
            NoiseSource(bad, "cpu")


def test_errors_come_in_kinds_a_caller_can_tell_apart():
    model = SemanticDraw(AnalyticBackbone("sd15", channels=4), max_pixels=64 * 64)
    scene = rect_scene(64, 64)
    cases = [
        (SceneError, lambda: model.generate({"height": 64}, seed=0)),
        (SceneError, lambda: model.generate(Scene(64, 64, [], Background("")), seed=0)),
        (ResourceError, lambda: model.generate(rect_scene(128, 128), seed=0)),
        (OptionError, lambda: model.generate(scene, seed=0, method="magic")),
        (OptionError, lambda: model.generate(scene, seed=0, bootstrap=3)),
        (OptionError, lambda: model.generate(scene, seed=0, output="bogus")),
        (OptionError, lambda: model.generate(scene, seed=1.5)),
        (LoadError, lambda: SemanticDraw.from_preset("no-such-preset")),
        (LoadError, lambda: SemanticDraw.load("tiny-sd15", loras=["x.safetensors"])),
    ]
    for kind, call in cases:
        with pytest.raises(kind):
            call()
    session = model.stream(scene, seed=0)
    session.close()
    with pytest.raises(SessionClosedError):
        session.next_frame()
    assert all(issubclass(k, SemanticDrawError) for k, _ in cases)
