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


def test_output_mistakes_are_one_line_before_any_work(tmp_path, capsys):
    assert main(["generate", ASSET, "--preset", "tiny-sd15", "--out", str(tmp_path / "c.xyz")]) == 2
    assert main(["generate", ASSET, "--preset", "tiny-sd15", "--out", "/proc/no/such/folder/a.png"]) == 2
    assert main(["generate", ASSET, "--preset", "tiny-sd15", "--height", "64", "--steps", "0",
                 "--out", str(tmp_path / "a.png")]) == 2
    assert main(["generate", ASSET, "--device", "cuda", "--preset", "tiny-sd15", "--height", "64",
                 "--out", str(tmp_path / "b.png")]) == 2 or __import__("torch").cuda.is_available()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in lines), err       # one clean line each, no progress bar
    assert ".xyz" in err and "folder" in err and "steps" in err and "Traceback" not in err
    assert not (tmp_path / "a.png").exists()


def test_the_package_installs_with_its_command(tmp_path):
    import subprocess
    import sys
    import zipfile
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path), str(root)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("semantic_draw-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "semantic-draw = semantic_draw.__main__:main" in z.read(entry).decode()
    assert "semantic_draw/backbones/registry.py" in names and "semantic_draw/compiled.py" in names


def test_compile_ahead_compiles_the_palettes_calls_once_and_loads_them_the_next_run(tmp_path, capsys):
    base = ["generate", ASSET, "--preset", "tiny-sd3", "--height", "64", "--seed", "3"]
    assert main(base + ["--compile-ahead", "--out", str(tmp_path / "x.png")]) == 2     # no folder for its programs
    assert "--compile-cache" in capsys.readouterr().err
    cache = str(tmp_path / "cache")
    assert main(base + ["--out", str(tmp_path / "eager.png")]) == 0
    assert main(base + ["--compile-ahead", "--compile-cache", cache, "--out", str(tmp_path / "first.png")]) == 0
    first = capsys.readouterr().err
    assert "0 program(s) loaded" in first and " 0 compiled" not in first
    assert main(base + ["--compile-ahead", "--compile-cache", cache, "--out", str(tmp_path / "again.png")]) == 0
    again = capsys.readouterr().err
    assert "0 compiled" in again and "0 program(s) loaded" not in again
    eager, *compiled = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("eager", "first", "again"))
    for image in compiled:
        assert np.abs(image - eager).max() <= 1            # the same picture, up to the rounding of a pixel value


def test_compile_ahead_that_cannot_compile_still_makes_the_picture(tmp_path, capsys, monkeypatch):
    import torch

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_space)
    base = ["generate", ASSET, "--preset", "tiny-sd3", "--height", "64", "--seed", "3"]
    assert main(base + ["--out", str(tmp_path / "eager.png")]) == 0
    assert main(base + ["--compile-ahead", "--compile-cache", str(tmp_path / "cache"),
                        "--out", str(tmp_path / "ahead.png")]) == 0
    err = capsys.readouterr().err
    assert "could not be compiled and run as before" in err and "No space left on device" in err
    eager, ahead = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("eager", "ahead"))
    assert np.abs(ahead - eager).max() <= 1
