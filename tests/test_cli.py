"""The command line, run in-process."""
import numpy as np
from PIL import Image

from semantic_draw.__main__ import main, parse_lora

ASSET = "assets/timessquare"


def test_presets_lists_real_and_offline_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("sd15", "sdxl", "sd3", "tiny-sd15", "tiny-sd3"):
        assert f"\n{name} " in "\n" + out


def test_generate_writes_an_image_of_the_scene_size_with_progress(tmp_path, capsys):
    out = tmp_path / "result.png"
    previews = tmp_path / "previews"
    rc = main(["generate", ASSET, "--preset", "tiny-sd15", "--height", "64", "--seed", "3", "--out", str(out),
               "--previews", str(previews)])
    assert rc == 0
    assert Image.open(out).size == (64, 64)
    assert len(list(previews.glob("step_*.png"))) == 4
    captured = capsys.readouterr()
    assert "4/4" in captured.err and "saved" in captured.out
    again = tmp_path / "again.png"
    main(["generate", ASSET, "--preset", "tiny-sd15", "--height", "64", "--seed", "3", "--out", str(again)])
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_stream_and_preview(tmp_path):
    assert main(["stream", ASSET, "--preset", "tiny-sd15", "--height", "64", "--frames", "3",
                 "--out-dir", str(tmp_path / "f")]) == 0
    assert len(list((tmp_path / "f").glob("frame_*.png"))) == 3
    assert main(["preview", "assets/irworobongdo", "--out", str(tmp_path / "p.png")]) == 0
    assert Image.open(tmp_path / "p.png").size == (1920, 768)


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "missing"), "--preset", "tiny-sd15"]) == 2
    assert main(["generate", ASSET, "--preset", "nope"]) == 2
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    assert main(["generate", str(broken), "--preset", "tiny-sd15"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "Traceback" not in err and "tiny-sd15" in err


def test_lora_argument():
    assert parse_lora("ByteDance/Hyper-SD::Hyper-SD15-4steps-lora.safetensors@0.8") == (
        "ByteDance/Hyper-SD", "Hyper-SD15-4steps-lora.safetensors", 0.8)
    assert parse_lora("./style.safetensors") == ("./style.safetensors", None, 1.0)


def test_the_attention_layout_from_the_command_line(tmp_path, capsys):
    assert main(["stream", "assets/irworobongdo", "--preset", "tiny-sd15", "--height", "48", "--frames", "2",
                 "--regions", "attention", "--out-dir", str(tmp_path / "f")]) == 0
    assert len(list((tmp_path / "f").glob("frame_*.png"))) == 2
    assert "attention regions" in capsys.readouterr().out
    out = tmp_path / "a.png"
    assert main(["generate", ASSET, "--preset", "tiny-sd3", "--height", "64", "--regions", "attention",
                 "--out", str(out)]) == 0
    assert Image.open(out).size == (64, 64)
