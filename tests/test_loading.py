"""Loading on tiny pipelines, offline: folders, single files, LoRAs, PEFT adapters, refusals and error messages."""
from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
from ldm_checkpoint import save_ldm_checkpoint
from peft import LoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict

from semantic_draw.errors import SemanticDrawError
from semantic_draw.loading import (backbone_from_pipeline, default_device_dtype, family_of_single_file, load_backbone,
                                   load_pipeline)
from semantic_draw.presets import PRESETS, Preset, get_preset
from semantic_draw.schedule import SAMPLERS, build_schedule
from semantic_draw.tiny import build_tiny_pipeline

FAMILIES = ("sd15", "sdxl", "sd3")
TARGETS = ["to_q", "to_k", "to_v"]


def _output(pipe, prompt="a red cat", t=500.0):
    """One model output and the prompt embedding of a pipeline, on fixed inputs."""
    bb = backbone_from_pipeline(pipe)
    cond = bb.encode_prompts([prompt])
    x = torch.randn(1, bb.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    return bb.model_output(x, torch.tensor([t]), cond), cond


def _denoiser(pipe):
    return pipe.transformer if hasattr(pipe, "transformer") else pipe.unet


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Per family: the tiny pipeline (seed 0) and the folder it was saved to."""
    out = {}
    for family in FAMILIES:
        pipe = build_tiny_pipeline(family)
        folder = tmp_path_factory.mktemp(family)
        pipe.save_pretrained(folder)
        out[family] = (pipe, folder)
    return out


# -- device and dtype ----------------------------------------------------------------------------------------------
def test_default_device_dtype():
    assert default_device_dtype("cpu") == (torch.device("cpu"), torch.float32)
    assert default_device_dtype("cpu", "float16") == (torch.device("cpu"), torch.float16)
    assert default_device_dtype("cpu", "bf16")[1] == torch.bfloat16
    assert default_device_dtype("cpu", torch.float64)[1] == torch.float64
    device, dtype = default_device_dtype()
    assert dtype == (torch.float32 if device.type == "cpu" else torch.float16)
    with pytest.raises(SemanticDrawError, match="dtype"):
        default_device_dtype("cpu", "float8")
    with pytest.raises(SemanticDrawError, match="device"):
        default_device_dtype("gpu0")


# -- folders -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_saved_folder_loads_back_identically(saved, family):
    pipe, folder = saved[family]
    loaded = load_pipeline(folder, device="cpu")
    assert type(loaded) is type(pipe)
    (out, cond), (out2, cond2) = _output(pipe), _output(loaded)
    torch.testing.assert_close(out, out2, rtol=1e-5, atol=1e-6)   # same weights (threads may reorder sums)
    torch.testing.assert_close(cond, cond2, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(_denoiser(pipe).parameters(), _denoiser(loaded).parameters()))


def test_family_can_be_forced_and_must_be_known(saved):
    pipe, folder = saved["sd15"]
    assert type(load_pipeline(folder, family="sd15")) is type(pipe)
    with pytest.raises(SemanticDrawError, match="family"):
        load_pipeline(folder, family="sd2")


def test_sd3_t5_is_dropped_unless_kept(tmp_path):
    pipe = build_tiny_pipeline("sd3", with_t5=True)
    pipe.save_pretrained(tmp_path)
    assert load_pipeline(tmp_path).text_encoder_3 is None
    kept = load_pipeline(tmp_path, keep_t5=True)
    assert kept.text_encoder_3 is not None
    torch.testing.assert_close(_output(kept)[1]["embeds"], _output(pipe)[1]["embeds"])


def test_vae_and_tiny_vae_from_folders(saved, tmp_path):
    pipe, folder = saved["sd15"]
    other = build_tiny_pipeline("sd15", seed=3)
    other.vae.save_pretrained(tmp_path / "vae")
    other.tiny_vae.save_pretrained(tmp_path / "tiny")
    loaded = load_pipeline(folder, vae=str(tmp_path / "vae"), tiny_vae=str(tmp_path / "tiny"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.vae.parameters(), other.vae.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(loaded.tiny_vae.parameters(), other.tiny_vae.parameters()))
    assert backbone_from_pipeline(loaded).tiny_vae is loaded.tiny_vae


# -- LoRAs ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_lora_file_changes_the_output_as_peft_would(saved, family, tmp_path):
    _, folder = saved[family]
    reference = load_pipeline(folder)
    denoiser = _denoiser(reference)
    with torch.random.fork_rng():
        torch.manual_seed(1)   # init_lora_weights=False: random A and B, so the LoRA does something
        denoiser.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False, target_modules=TARGETS))
    layers = {("transformer" if family == "sd3" else "unet") + "_lora_layers": get_peft_model_state_dict(denoiser)}
    type(reference).save_lora_weights(tmp_path, weight_name="tiny_lora.safetensors", **layers)
    lora_file = tmp_path / "tiny_lora.safetensors"

    base = _output(load_pipeline(folder))[0]
    expected = _output(reference)[0]                       # the adapter live in PEFT
    fused = _output(load_pipeline(folder, loras=[(str(lora_file), None, 1.0)]))[0]
    assert not torch.allclose(fused, base)
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-5)
    kept = load_pipeline(folder, loras=[str(lora_file)], fuse_loras=False)
    assert _denoiser(kept).active_adapters() == ["lora0"]
    torch.testing.assert_close(_output(kept)[0], expected, rtol=1e-4, atol=1e-5)
    half = _output(load_pipeline(folder, loras=[(str(lora_file), None, 0.5)]))[0]
    assert not torch.allclose(half, fused) and not torch.allclose(half, base)
    torch.testing.assert_close(_output(load_pipeline(folder, loras=[(str(tmp_path), None, 0.0)]))[0], base)


def test_peft_adapter_folder_is_scaled_like_peft(saved, tmp_path, monkeypatch):
    _, folder = saved["sd3"]
    reference = load_pipeline(folder)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        config = LoraConfig(r=2, lora_alpha=8, alpha_pattern={"to_v": 1}, init_lora_weights=False,
                            target_modules=TARGETS)
        get_peft_model(reference.transformer, config).save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "adapter_model.safetensors").is_file()
    loaded = _output(load_pipeline(folder, loras=[(str(tmp_path), None, 1.0)]))[0]
    torch.testing.assert_close(loaded, _output(reference)[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(loaded, _output(load_pipeline(folder))[0])
    # The same adapter named as the sd3 preset names jasperai/flash-sd3 on the hub (downloads faked locally).
    import huggingface_hub
    fetched = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo, name, **kw: fetched.append((repo, name)) or str(tmp_path / name))
    lora = get_preset("sd3").loras[0]
    torch.testing.assert_close(_output(load_pipeline(folder, loras=[lora]))[0], loaded)
    assert fetched == [(lora[0], "adapter_config.json"), (lora[0], "adapter_model.safetensors")]


def test_lora_item_shapes_are_checked(saved):
    with pytest.raises(SemanticDrawError, match="LoRA"):
        load_pipeline(saved["sd15"][1], loras=[("a", "b", 1.0, "extra")])


# -- single files --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_with_local_config_folder(family, tmp_path):
    pipe = build_tiny_pipeline(family, seed=0)
    base = build_tiny_pipeline(family, seed=1)          # the config folder holds different weights
    base.save_pretrained(tmp_path / "config")
    checkpoint = tmp_path / "model.safetensors"
    # SD1.5 files carry their text encoder; here SDXL and SD3 files do not (many SD3 files ship without them):
    # those come from the config folder's weights.
    save_ldm_checkpoint(pipe, checkpoint, text_encoder=family == "sd15")
    assert family_of_single_file(checkpoint) == family
    loaded = load_pipeline(checkpoint, config=str(tmp_path / "config"))
    assert type(loaded) is type(pipe)
    encoders = pipe if family == "sd15" else base
    # The denoiser and VAE come from the file, the text encoders from the file (SD1.5) or the config folder.
    torch.testing.assert_close(_output(loaded)[1], _output(encoders)[1])
    bb, ref = backbone_from_pipeline(loaded), backbone_from_pipeline(pipe)
    cond = ref.encode_prompts(["a cat", "a dog"])
    x = torch.randn(2, ref.latent_channels, 8, 8, generator=torch.Generator().manual_seed(5))
    ts = torch.tensor([900.0, 300.0])
    torch.testing.assert_close(bb.model_output(x, ts, cond), ref.model_output(x, ts, cond), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bb.decode(x[:1]), ref.decode(x[:1]))


def test_single_file_without_text_encoders_needs_a_config(tmp_path):
    checkpoint = tmp_path / "sd3.safetensors"
    save_ldm_checkpoint(build_tiny_pipeline("sd3"), checkpoint, text_encoder=False)
    with pytest.raises(SemanticDrawError, match="config="):
        load_pipeline(checkpoint)


def test_unrecognized_single_file(tmp_path):
    from safetensors.torch import save_file
    save_file({"some.weight": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(SemanticDrawError, match="family="):
        load_pipeline(tmp_path / "x.safetensors")


# -- refusals and errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["model.ckpt", "model.bin", "model.pt", "model.pth"])
def test_pickle_files_are_refused_unread(saved, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not even a pickle")      # refused before any read
    with pytest.raises(SemanticDrawError, match="pickle"):
        load_pipeline(path)
    with pytest.raises(SemanticDrawError, match="pickle"):
        load_pipeline(saved["sd15"][1], loras=[str(path)])
    with pytest.raises(SemanticDrawError, match="pickle"):
        load_pipeline(saved["sd15"][1], loras=[("someone/lora", "weights.bin", 1.0)])


def test_folder_with_only_pickle_weights_is_refused(saved, tmp_path):
    _, folder = saved["sd15"]
    copy = tmp_path / "pickled"
    shutil.copytree(folder, copy)
    for weights in (copy / "unet").glob("*.safetensors"):
        weights.unlink()
    (copy / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(SemanticDrawError, match="pickle"):
        load_pipeline(copy)


def test_missing_local_file_and_non_pipeline_folder(tmp_path):
    with pytest.raises(SemanticDrawError, match="No such file"):
        load_pipeline(tmp_path / "missing.safetensors")
    with pytest.raises(SemanticDrawError, match="model_index.json"):
        load_pipeline(tmp_path)


def test_hub_id_offline_names_the_offline_presets(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SemanticDrawError) as info:
        load_pipeline("someone/some-model-that-is-not-cached")
    message = str(info.value)
    assert "someone/some-model-that-is-not-cached" in message and "could not be loaded" in message
    assert "offline" in message and all(p in message for p in ("tiny-sd15", "tiny-sdxl", "tiny-sd3"))
    with pytest.raises(SemanticDrawError, match="tiny-sd15"):
        load_backbone("sdxl")                      # a real preset, offline
    url = "https://huggingface.co/someone/model/blob/main/model.safetensors"
    with pytest.raises(SemanticDrawError, match="tiny-sd3"):
        load_pipeline(url)
    with pytest.raises(SemanticDrawError, match="pickle"):
        load_pipeline(url.replace(".safetensors", ".ckpt"))
    with pytest.raises(SemanticDrawError, match="neither a local file or folder nor a hub id"):
        load_pipeline("./no/such/folder")


# -- presets -------------------------------------------------------------------------------------------------------
def test_unknown_preset_names_the_known_ones():
    with pytest.raises(SemanticDrawError) as info:
        get_preset("sd4")
    assert "sd4" in str(info.value) and all(name in str(info.value) for name in PRESETS)


def test_presets_are_consistent():
    assert {"sd15", "sd15-hyper", "sdxl", "sd3", "tiny-sd15", "tiny-sdxl", "tiny-sd3"} <= set(PRESETS)
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.sampler in SAMPLERS
        assert preset.tiny == (preset.model is None) == name.startswith("tiny-")
        assert all(len(lora) == 3 for lora in preset.loras)
        h, w = preset.canvas
        multiple = 16 if preset.family == "sd3" else 8
        assert h % multiple == 0 and w % multiple == 0
    assert get_preset("sd15").timesteps == (999, 919, 759, 499, 259) and get_preset("sd15").cover_alpha == 0.3
    assert get_preset("sdxl").spacing == "trailing" and get_preset("sdxl").vae == "madebyollin/sdxl-vae-fp16-fix"
    assert get_preset("sd3").keep_t5 is False and get_preset("sd3").cover_alpha == 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("sd15").steps = 8
    with pytest.raises(SemanticDrawError, match="sampler"):
        Preset("x", "sd15", "", "some/model", sampler="dpm")


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl", "tiny-sd3"])
def test_tiny_presets_build_their_schedules(name):
    preset = get_preset(name)
    bb = load_backbone(preset, device="cpu")
    schedule = build_schedule(preset.sampler, bb.scheduler_config, bb.prediction_type, steps=preset.steps,
                              timesteps=preset.timesteps, spacing=preset.spacing, eta=preset.eta)
    assert schedule.steps == 4 and bool((schedule.sigmas[:-1] > 0).all())
    custom = load_backbone(dataclasses.replace(preset, native_size=128, tile_size=96, cover_alpha=0.5))
    assert (custom.native_size, custom.tile_size, custom.cover_alpha) == (128, 96, 0.5)


def test_backbone_defaults_per_family():
    for family, (native, tile, cover) in {"sd15": (64, 96, 0.3), "sdxl": (64, 64, 0.1), "sd3": (64, 64, 0.1)}.items():
        bb = backbone_from_pipeline(build_tiny_pipeline(family))
        assert (bb.native_size, bb.tile_size, bb.cover_alpha) == (native, tile, cover)
