"""The benchmark scripts as a GPU session runs them: ``DRY_RUN=1 bash bench/gpu_session.sh NAME`` runs a session's
phases on this CPU with the tiny presets (few frames), so a command that would fail on the device machine fails here
first, before a short GPU lease is spent on it. CI runs the sessions next in line (``NEXT``); the others:
``DRY_RUN=1 OUT=/tmp/dry bash bench/gpu_session.sh sixth``."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NEXT = ("eighth", "ninth")          # bench/RESULTS.md's queue: what the next lease runs first


def phases(session: str) -> list[str]:
    """The names of a session's phases, read off the script."""
    text = (ROOT / "bench" / "gpu_session.sh").read_text()
    block = re.search(rf'= {session} \]; then\n(.*?)\n    exit\n', text, re.S)
    assert block, f"no session {session} in gpu_session.sh"
    return re.findall(r"^\s*phase (\S+) \d+ ", block.group(1), re.M)


@pytest.mark.parametrize("session", NEXT)
def test_the_next_gpu_sessions_run_here_with_the_tiny_presets(session, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), PYTHONPATH=str(ROOT))
    run = subprocess.run(["bash", "bench/gpu_session.sh", session], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=1500)
    log = (out / "log").read_text()
    names = phases(session)
    assert names, "the session has no phases"
    for name in names:
        assert re.search(rf"^=== {name}: exit 0 after", log, re.M), f"phase {name} failed:\n{log[-4000:]}"
    assert run.returncode == 0 and "=== 0 phase(s) failed" in log
    # every phase measured something: a row of frames/s (stream.py) or of seconds (methods.py) per phase
    assert len(re.findall(r"frames/s|time median", log)) >= len(names), log[-4000:]
    assert "tiny-" in log and "--full-size" not in log.replace("=== ", "")


def run_phases(tmp_path, phases_text: str) -> tuple[int, str]:
    """The session script's set-up (dry) followed by ``phases_text``: its exit status and its log."""
    script = (ROOT / "bench" / "gpu_session.sh").read_text()
    test = tmp_path / "session.sh"
    test.write_text(script.split('if [ "${1:-first}" = second ]', 1)[0] + phases_text + "exit\n")
    out = tmp_path / "out"
    run = subprocess.run(["bash", str(test)], cwd=ROOT, env=dict(os.environ, DRY_RUN="1", OUT=str(out)),
                         capture_output=True, text=True, timeout=120)
    return run.returncode, (out / "log").read_text()


def test_a_failing_phase_is_counted_and_the_others_still_run(tmp_path):
    """The session's exit status is its number of failed phases; a failing phase does not stop the next."""
    status, log = run_phases(tmp_path, "phase broken 20 python3 -c 'raise SystemExit(3)'\n"
                                       "phase fine 20 python3 -c 'print(\"ok\")'\n")
    assert status == 1, log
    assert "=== broken: exit 3" in log and "=== fine: exit 0" in log and "=== 1 phase(s) failed" in log


def test_a_dry_phase_gets_the_tiny_preset_and_few_frames(tmp_path):
    """The rewriting itself: the family's tiny preset, --full-size gone, frames and repeats cut (0 stays 0)."""
    status, log = run_phases(tmp_path, "phase show 20 python3 -c 'import sys; print(\"ARGS\", *sys.argv[1:])' "
                                       "--full-size --preset sdxl --frames 30 --repeats 3 --oneshot-repeats 0 "
                                       "--seconds 8 --layers 1,3\n")
    shown = next(line for line in log.splitlines() if line.startswith("ARGS"))
    assert status == 0 and shown.split()[1:] == ["--preset", "tiny-sdxl", "--frames", "3", "--repeats", "1",
                                                 "--oneshot-repeats", "0", "--seconds", "2", "--layers", "1,3"]
    (tmp_path / "hyper").mkdir()
    status, log = run_phases(tmp_path / "hyper", "phase hyper 20 python3 -c 'import sys; print(\"ARGS\", *sys.argv[1:])' "
                                       "--full-size --preset sd15-hyper\n")
    shown = next(line for line in log.splitlines() if line.startswith("ARGS"))
    assert shown.split()[1:] == ["--preset", "tiny-sd15"]      # a preset of a family: that family's tiny one


def test_a_model_folder_of_a_tiny_preset_is_the_preset_model(tmp_path):
    """--model-dir with a tiny preset: saved once, loaded by the library's loading code, the same model."""
    sys.path.insert(0, str(ROOT))
    import torch
    from bench.common import build_model
    from semantic_draw import SemanticDraw
    from tests.scenes import rect_scene

    args = SimpleNamespace(preset="tiny-sd15", full_size=False, model_dir=str(tmp_path), threads=None,
                           device="cpu", dtype=None)
    loaded = build_model(args)
    assert (tmp_path / "tiny-sd15" / "model_index.json").exists()
    assert "loaded from" in loaded.name
    again = build_model(args)           # the folder is there now: loaded, not built again
    reference = SemanticDraw.from_preset("tiny-sd15", device="cpu")
    scene = rect_scene(64, 64, (("a red ball", (8, 8, 40, 40)), ("a tree", (24, 24, 60, 56))))
    images = [np.asarray(m.generate(scene, seed=3)) for m in (loaded, again, reference)]
    assert np.array_equal(images[0], images[2]) and np.array_equal(images[1], images[2])
    assert torch.equal(loaded.backbone.denoiser.conv_in.weight, reference.backbone.denoiser.conv_in.weight)
