#!/usr/bin/env python3
"""Hostile inputs for semantic_draw: malformed palettes and bad API calls, each run under a time and a memory cap.

    python tests/fuzz_inputs.py --palettes 1000 --calls 250 --seed 0

Palettes are folders and zips written to a temporary folder: the cases of the issue by name (lone surrogates, huge
numbers, deep JSON, NUL and overlong file names, special files, encrypted zip members, zip bombs, too many brushes,
too much work, huge prompts, huge images), then seeded random mutations of a valid palette (its JSON values, keys,
text and files, its zip's headers). Each is loaded (``Scene.load``) and, when it loads, generated. Calls are bad
values for each argument of ``generate``, ``stream``, ``Scene`` / ``Layer`` / ``Background``, ``Scene.load`` /
``save`` / ``resized`` / ``preview`` and the loaders (presets, devices, dtypes, options, malicious checkpoints).

Every case runs in a worker process whose address space is capped (RLIMIT_AS, default 4 GiB) with a per-case alarm
(default 20 s); the parent kills a worker that stops answering and goes on with a fresh one. After a case the
worker checks that the model still generates a good scene. Outcomes: fine, a SemanticDrawError (by subclass), or a
failure: another exception (the case and its traceback are printed), a hang, over memory, a crashed worker, or a
model that no longer works. The table is printed; the exit status is 1 when there is any failure.

``tests/test_hostile.py`` imports ``run`` and ``FAST`` (the fast subset) from here, and the case builders.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:   # run as a script: the package from this checkout
    sys.path.insert(0, str(ROOT))
FAST = {"palettes": 100, "calls": 60, "seed": 0}   # the subset tests/test_hostile.py runs
CASE_TIMEOUT = 20.0           # s a case may take (the alarm in the worker; the parent waits 15 s more)
MEMORY_CAP = 4 * 2 ** 30      # bytes of address space of a worker
STARTUP_TIMEOUT = 180.0       # s for a worker to import torch and build its model
MODEL = "tiny-sd15"
MAX_PIXELS = 128 * 128        # the worker's model refuses larger canvases (as a server would): generation stays fast
SUBCLASSES = ("SceneError", "OptionError", "LoadError", "ResourceError", "SessionClosedError", "SemanticDrawError")
FAILURES = ("other", "hang", "over-memory", "crash", "broken-model")
OUTCOMES = ("fine",) + SUBCLASSES + FAILURES


# ================================================================ the worker's side

class CaseTimeout(BaseException):
    """Raised by the alarm in the worker: not an Exception, so no library code can swallow it."""


@dataclass
class Case:
    name: str
    run: Callable[["Ctx"], None]


class Ctx:
    """What cases share in one worker: the model, a good scene, a scratch folder and cached assets."""

    def __init__(self, tmp: Path, model=None):
        import numpy as np
        from semantic_draw import Background, Layer, Scene
        self.tmp, self.assets = tmp, tmp / "assets"
        self.assets.mkdir(parents=True, exist_ok=True)
        self._model = model
        a, b = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
        a[8:40, 8:40], b[24:56, 24:56] = True, True
        self.scene = Scene(64, 64, [Layer("a red apple", a, name="apple", mask_blur=4),
                                    Layer("a blue cup", b, negative_prompt="blurry")],
                           Background("a wooden table"), negative_prompt="low quality").validate()
        self.counter = 0
        self.touched = True   # whether the case in progress reached the model (a palette that fails to load never does)

    @property
    def model(self):
        if self._model is None:
            from semantic_draw import SemanticDraw
            self._model = SemanticDraw.from_preset(MODEL, max_pixels=MAX_PIXELS)
        return self._model

    def fresh(self, name: str = "case") -> Path:
        """An empty folder of its own for one case."""
        self.counter += 1
        folder = self.tmp / f"{self.counter:05d}-{name[:40].replace('/', '_')}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def asset(self, name: str, make: Callable[[Path], None]) -> Path:
        """A file made once per worker (big PNGs, zip bombs)."""
        path = self.assets / name
        if not path.exists():
            make(path)
        return path

    def pipeline_folder(self) -> Path:
        """The tiny SD1.5 pipeline saved as a diffusers folder (made once)."""
        folder = self.assets / "pipeline-sd15"
        if not (folder / "model_index.json").exists():
            from semantic_draw.tiny import build_tiny_pipeline
            build_tiny_pipeline("sd15").save_pretrained(folder)
        return folder

    def good_generate(self) -> None:
        image = self.model.generate(self.scene, seed=1)
        assert image.size == (64, 64)


def classify(err: BaseException) -> str:
    from semantic_draw.errors import SemanticDrawError
    import torch
    if isinstance(err, CaseTimeout):
        return "hang"
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)) or (
            isinstance(err, RuntimeError) and "allocate" in str(err)):
        return "over-memory"
    if isinstance(err, SemanticDrawError):
        return type(err).__name__ if type(err).__name__ in SUBCLASSES else "SemanticDrawError"
    return "other"


def _alarm(signum, frame):
    raise CaseTimeout(f"over {CASE_TIMEOUT:g} s")


def run_case(case: Case, ctx: Ctx, check_model: bool = True, timeout: float = CASE_TIMEOUT) -> tuple[str, str]:
    """(outcome, detail) of one case in this process, with an alarm; then, if the case reached the model, the model
    must still generate."""
    ctx.touched = not case.name.startswith("palette:")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        try:
            case.run(ctx)
            outcome, detail = "fine", ""
        except BaseException as err:   # noqa: B902 - every outcome is counted, the alarm's included
            if isinstance(err, KeyboardInterrupt):
                raise
            outcome = classify(err)
            detail = f"{type(err).__name__}: {str(err)[:300]}"
            if outcome == "other":
                detail += "\n" + "".join(traceback.format_exception(type(err), err, err.__traceback__)[-6:])
        if check_model and ctx.touched and outcome not in ("hang", "over-memory"):
            try:
                ctx.good_generate()
            except BaseException as err:   # noqa: B902
                if isinstance(err, KeyboardInterrupt):
                    raise
                return "broken-model", f"after {outcome}: {type(err).__name__}: {str(err)[:300]}"
        return outcome, detail
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def worker_main(args) -> None:
    """The worker: caps its memory, builds the cases, runs those from --start on, one JSON line per event."""
    resource.setrlimit(resource.RLIMIT_AS, (args.memory, args.memory))
    import torch
    torch.set_num_threads(1)
    cases = build_cases(**json.loads(args.spec))
    tmp = Path(args.tmp)
    ctx = Ctx(tmp)
    ctx.model   # noqa: B018 - built before the first case
    out = sys.stdout

    def say(**event):
        out.write(json.dumps(event) + "\n")
        out.flush()

    say(event="ready", rss=_rss())
    for index in range(args.start, len(cases)):
        case = cases[index]
        say(event="start", index=index)
        began = time.monotonic()
        outcome, detail = run_case(case, ctx, timeout=args.timeout)
        say(event="done", index=index, outcome=outcome, detail=detail, seconds=time.monotonic() - began,
            rss=_rss())
        if outcome in ("over-memory", "hang", "broken-model"):
            return   # a fresh worker goes on
    say(event="end")


def _rss() -> int:
    """Peak resident memory of this process so far, bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ================================================================ the parent's side

@dataclass
class Result:
    index: int
    name: str
    kind: str
    outcome: str
    detail: str = ""
    seconds: float = 0.0


def run(palettes: int = FAST["palettes"], calls: int = FAST["calls"], seed: int = FAST["seed"],
        timeout: float = CASE_TIMEOUT, memory: int = MEMORY_CAP, verbose: bool = False, out=sys.stdout,
        named: bool = True, extra: tuple[str, ...] = ()) -> tuple[list[Result], int]:
    """Run the cases (see build_cases) in capped workers; returns the results and the largest peak RSS of a worker
    (bytes)."""
    spec = {"palettes": palettes, "calls": calls, "seed": seed, "named": named, "extra": list(extra)}
    names = [(case.name, kind) for kind, case in _kinds(build_cases(**spec))]
    results: list[Result] = []
    peak, start = 0, 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MALLOC_ARENA_MAX": "2",
           "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="fuzz-inputs-") as tmp:
        while start < len(names):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--start", str(start),
                   "--spec", json.dumps(spec), "--tmp", tmp, "--timeout", str(timeout), "--memory", str(memory)]
            with tempfile.TemporaryFile() as errors:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env, cwd=ROOT,
                                        start_new_session=True)
                try:
                    start, peak = _follow(proc, errors, names, results, start, peak, timeout, out, verbose)
                finally:
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    proc.stdout.close()
    return results, peak


def _follow(proc, errors, names, results, start, peak, timeout, out, verbose) -> tuple[int, int]:
    """Read one worker's events until it ends, dies or stops answering; returns where the next worker starts."""
    ready, current, buffer = False, None, b""
    while True:
        line, buffer = _read_line(proc, buffer, timeout + 15 if ready else STARTUP_TIMEOUT)
        if line is None:   # silence past the limit, or the end of the worker's output
            try:
                proc.wait(timeout=5 if ready else 0.1)
            except subprocess.TimeoutExpired:
                pass
            dead = proc.poll() is not None
            errors.seek(0)
            tail = errors.read().decode("utf-8", "replace")[-1500:]
            if not ready:
                how = f"exit {proc.returncode}" if dead else "no answer"
                raise RuntimeError(f"the fuzz worker did not start ({how}):\n{tail}")
            if current is None:
                return start, peak   # the worker stopped after a failure: a fresh one goes on
            detail = f"the worker died (exit {proc.returncode}): {tail}" if dead else f"no answer in {timeout + 15:g} s"
            results.append(Result(current, *names[current], "crash" if dead else "hang", detail, timeout + 15))
            _report(results[-1], out, verbose)
            return current + 1, peak
        event = json.loads(line)
        peak = max(peak, event.get("rss", 0))
        if event["event"] == "ready":
            ready = True
        elif event["event"] == "start":
            current = event["index"]
        elif event["event"] == "done":
            r = Result(event["index"], *names[event["index"]], event["outcome"], event["detail"], event["seconds"])
            results.append(r)
            _report(r, out, verbose)
            current, start = None, event["index"] + 1
        elif event["event"] == "end":
            return len(names), peak


def _read_line(proc, buffer: bytes, wait: float) -> tuple[str | None, bytes]:
    deadline = time.monotonic() + wait
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, buffer
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            return None, buffer
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            return None, buffer
        buffer += chunk
    line, _, rest = buffer.partition(b"\n")
    return line.decode("utf-8", "replace"), rest


def _report(r: Result, out, verbose: bool) -> None:
    if r.outcome in FAILURES:
        out.write(f"FAIL [{r.kind} #{r.index}] {r.name}: {r.outcome}: {r.detail}\n")
    elif verbose:
        out.write(f"  [{r.kind} #{r.index}] {r.name}: {r.outcome} ({r.seconds:.2f} s) {r.detail[:160]}\n")
    out.flush()


def table(results: list[Result], peak: int, memory: int = MEMORY_CAP) -> str:
    """The counts of outcomes per kind of case, as a text table."""
    columns = [o for o in OUTCOMES if o != "SemanticDrawError" or any(r.outcome == o for r in results)]
    rows = []
    for kind in ("palette", "call", "total"):
        chosen = [r for r in results if kind == "total" or r.kind == kind]
        rows.append([kind, str(len(chosen))] + [str(sum(r.outcome == o for r in chosen)) for o in columns])
    head = ["kind", "cases"] + columns
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    slowest = max(results, key=lambda r: r.seconds, default=None)
    lines.append(f"largest peak RSS of a worker: {peak / 2 ** 20:.0f} MiB (address space capped at "
                 f"{memory / 2 ** 30:g} GiB)")
    if slowest is not None:
        lines.append(f"slowest case: {slowest.seconds:.1f} s ({slowest.kind} #{slowest.index}: {slowest.name})")
    return "\n".join(lines)


def _kinds(cases: list[Case]):
    for case in cases:
        yield ("palette" if case.name.startswith("palette:") else "call"), case


# ================================================================ the cases

def build_cases(palettes: int, calls: int, seed: int, named: bool = True, extra=()) -> list[Case]:
    """`palettes` palettes then `calls` calls: the named cases first (as many as fit; none with named=False), then
    seeded random ones; then the named cases called `extra`."""
    on_palettes, on_calls = named_palettes(), named_calls()
    by_name = {case.name: case for case in on_palettes + on_calls}
    chosen = (_take(on_palettes if named else [], random_palette, palettes, seed)
              + _take(on_calls if named else [], random_call, calls, seed))
    return chosen + [by_name[name] for name in extra]


def _take(named: list[Case], make_random, count: int, seed: int) -> list[Case]:
    cases = named[:count]
    for i in range(count - len(cases)):
        cases.append(make_random(random.Random(f"{seed}:{make_random.__name__}:{i}"), i))
    return cases


# ---------------------------------------------------------------- palette files

def base_dict(ctx: Ctx) -> dict:
    return ctx.scene.to_dict()


def write_palette(ctx: Ctx, name: str, d: dict | None = None, text: str | bytes | None = None,
                  files: dict[str, bytes] | None = None, as_zip: bool = False) -> Path:
    """A valid palette saved by the library, then its scene.json replaced by `d` / `text` and `files` added."""
    folder = ctx.fresh(name) / "palette"
    ctx.scene.save(folder)
    if d is not None or text is not None:
        body = text if text is not None else json.dumps(d)
        (folder / "scene.json").write_bytes(body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass"))
    for file_name, data in (files or {}).items():
        (folder / file_name).write_bytes(data)
    if not as_zip:
        return folder
    path = folder.parent / "palette.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f.name)
    return path


def with_hostile(d: dict, path: tuple, hostile: str) -> str:
    """scene.json text of `d` with the value at `path` replaced by the JSON text `hostile` (any text at all)."""
    marker = "@@HOSTILE-VALUE@@"
    target = d
    for key in path[:-1]:
        target = target[key]
    if isinstance(target, list) and path[-1] >= len(target):
        target.append(marker)
    else:
        target[path[-1]] = marker
    return json.dumps(d).replace(json.dumps(marker), hostile)


def load_and_generate(path: Path, ctx: Ctx) -> None:
    from semantic_draw import Scene
    scene = Scene.load(path)
    ctx.touched = True
    ctx.model.generate(scene, seed=0)


def palette_case(name: str, build: Callable[[Ctx], Path], then=load_and_generate) -> Case:
    def run_it(ctx: Ctx) -> None:
        then(build(ctx), ctx)
    return Case("palette: " + name, run_it)


def png_header(width: int, height: int, mode: int = 0, depth: int = 8) -> bytes:
    """A PNG whose header claims width x height pixels and whose data is a few bytes (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, mode, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def image_bytes(mode: str, size: tuple[int, int], fmt: str = "PNG", fill=255, **save) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new(mode, size, fill).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _big_png(path: Path, side: int = 8192, mode: str = "1") -> None:
    from PIL import Image
    Image.new(mode, (side, side), 1).save(path)


def _bomb_zip(path: Path, member: str = "scene.json", unpacked: int = 500 * 2 ** 20, unit: bytes = b"[],") -> None:
    """A zip whose `member` unpacks to `unpacked` bytes of `unit` (500 MB of "[]," zip to ~490 KB)."""
    chunk = unit * (2 ** 20 // len(unit))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open(member, "w", force_zip64=True) as f:
            f.write(b"[")
            for _ in range(unpacked // len(chunk)):
                f.write(chunk)
            f.write(b"[]]")


def patch_zip(path: Path, member: str, *, flags: int | None = None, method: int | None = None,
              size: int | None = None, crc: int | None = None) -> None:
    """Rewrite fields of `member`'s local and central headers in place (encrypted flag, method, size, CRC)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        local = z.getinfo(member).header_offset
    name = member.encode()
    central = [i for i in _find_all(data, b"PK\x01\x02") if data[i + 46:i + 46 + len(name)] == name]
    headers = [(local, (6, 8, 14, 22))] + [(c, (8, 10, 16, 24)) for c in central]   # field offsets in each
    for at, (flag_at, method_at, crc_at, size_at) in headers:
        if flags is not None:
            struct.pack_into("<H", data, at + flag_at, struct.unpack_from("<H", data, at + flag_at)[0] | flags)
        if method is not None:
            struct.pack_into("<H", data, at + method_at, method)
        if crc is not None:
            struct.pack_into("<I", data, at + crc_at, crc)
        if size is not None:
            struct.pack_into("<I", data, at + size_at, size)
    path.write_bytes(bytes(data))


def _find_all(data: bytes, needle: bytes) -> list[int]:
    found, at = [], data.find(needle)
    while at >= 0:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


def special(kind: str, path: Path) -> None:
    """Make `path` a special file: fifo, loop (a symlink to itself), loop2, zero (-> /dev/zero), null, urandom,
    folder, socket, dangling, outside (-> /etc/hostname), parent (-> ..)."""
    if path.exists() or path.is_symlink():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        os.symlink(path.name, path)
    elif kind == "loop2":
        os.symlink(path.name + ".other", path)
        os.symlink(path.name, path.with_name(path.name + ".other"))
    elif kind in ("zero", "null", "urandom"):
        os.symlink(f"/dev/{kind}", path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        try:
            s.bind(str(path))
        finally:
            s.close()
    elif kind == "dangling":
        os.symlink("no-such-file", path)
    elif kind == "outside":
        os.symlink("/etc/hostname", path)
    elif kind == "parent":
        os.symlink("..", path)
    else:
        raise ValueError(kind)


SPECIALS = ("fifo", "loop", "loop2", "zero", "null", "urandom", "folder", "socket", "dangling", "outside", "parent")


# JSON texts a field may be given: every type, the extremes, odd text
def hostile_json(rng: random.Random) -> str:
    choices = [
        "null", "true", "false", "0", "-1", "1", "0.5", "-0.0", "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
        "9223372036854775808", "18446744073709551616", "-9223372036854775809", "1" * rng.choice([20, 400, 4300]),
        "1" * 5000, "0." + "1" * 5000, "1e-400", '""', '" "', '"64"', '"\\ud800"', '"a\\udfffb"', '"\\u0000"',
        '"' + "x" * rng.choice([300, 4097, 100000]) + '"', "[]", "{}", "[1]", '{"a": 1}', "[" * 40 + "]" * 40,
        "[" * 5000 + "]" * 5000, '"../../etc/passwd"', '"/etc/passwd"', '"mask_1.png"', '"mask_1.png\\u0000x"',
        '"' + "m" * 5000 + '.png"', '"C:\\\\x.png"', '"."', '"mask_1.png/"', "[" + "0," * 120000 + "0]",
        '{"' + '": {"'.join("k" * 3 for _ in range(40)) + '": 1' + "}" * 40, '"semantic-draw-palette/9"',
    ]
    return rng.choice(choices)


def _json_paths(d, prefix=()) -> list[tuple]:
    paths = []
    if isinstance(d, dict):
        for k, v in d.items():
            paths.append(prefix + (k,))
            paths += _json_paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            paths.append(prefix + (i,))
            paths += _json_paths(v, prefix + (i,))
    return paths


def named_palettes() -> list[Case]:
    """The issue's malformed palettes and their closest relatives, by name."""
    cases = []

    def field(name: str, path: tuple, hostile: str, as_zip: bool = False) -> None:
        cases.append(palette_case(name, lambda ctx: write_palette(
            ctx, name, text=with_hostile(base_dict(ctx), path, hostile), as_zip=as_zip)))

    field("lone surrogate prompt", ("layers", 0, "prompt"), '"\\ud800"')
    field("lone surrogate negative prompt", ("layers", 1, "negative_prompt"), '"cat \\udc00"')
    field("lone surrogate background prompt", ("background", "prompt"), '"\\udfff"')
    field("lone surrogate name", ("layers", 0, "name"), '"\\ud800"')
    field("5000-digit height", ("height",), "6" * 5000)
    field("5000-digit mask_blur", ("layers", 0, "mask_blur"), "1" * 5000)
    field("5000-digit float mask_strength", ("layers", 0, "mask_strength"), "0." + "1" * 5000)
    field("JSON nested 100,000 deep", ("extra_deep",), "[" * 100000 + "]" * 100000)
    field("JSON nested 1,000 deep in a prompt", ("layers", 0, "prompt"), "[" * 1000 + "]" * 1000)
    field("JSON nested 33 deep", ("about",), "[" * 33 + "]" * 33)
    field("mask name with NUL", ("layers", 0, "mask"), '"mask_1.png\\u0000.png"')
    field("mask name of 5,000 characters", ("layers", 0, "mask"), '"' + "m" * 5000 + '.png"')
    field("mask name of 300 characters", ("layers", 0, "mask"), '"' + "m" * 300 + '.png"')
    field("mask_blur 2**63", ("layers", 0, "mask_blur"), str(2 ** 63))
    field("mask_blur 1e300", ("layers", 0, "mask_blur"), "1e300")
    field("mask_blur 1e6", ("layers", 0, "mask_blur"), "1000000")
    field("mask_blur Infinity", ("layers", 0, "mask_blur"), "Infinity")
    field("height 1e400", ("height",), "1e400")
    field("400,000-character prompt", ("layers", 0, "prompt"), '"' + "a" * 400000 + '"')
    field("1,100 brushes", ("layers",), json.dumps([{"prompt": f"thing {i}", "mask": "mask_1.png"}
                                                    for i in range(1100)]))
    field("65 brushes", ("layers",), json.dumps([{"prompt": "x", "mask": "mask_1.png"}] * 65))
    field("lone surrogate prompt (zip)", ("layers", 0, "prompt"), '"\\ud800"', as_zip=True)

    def canvas(name: str, side_h: int, side_w: int, brushes: int, mask: str = "big.png") -> None:
        def build(ctx):
            big = ctx.asset("big.png", _big_png)
            d = base_dict(ctx)
            d.update(height=side_h, width=side_w,
                     layers=[{"prompt": f"p{i}", "mask": mask} for i in range(brushes)])
            folder = write_palette(ctx, name, d)
            os.symlink(big, folder / "big.png")   # inside the palette: a link to the shared asset
            shutil.copyfile(big, folder / "big-copy.png")
            return folder
        cases.append(palette_case(name, build))

    canvas("64 brushes on 8192^2", 8192, 8192, 64, "big-copy.png")
    canvas("20 brushes sharing one 8192^2 PNG", 8192, 8192, 20, "big-copy.png")
    canvas("2 brushes sharing one 8192^2 PNG", 8192, 8192, 2, "big-copy.png")
    canvas("a mask linked to a shared 8192^2 PNG on 64^2", 64, 64, 1, "big.png")

    for target in ("scene.json", "mask_1.png"):
        for kind in ("fifo", "folder", "loop", "loop2", "zero", "urandom", "null", "socket", "dangling", "outside"):
            def build(ctx, target=target, kind=kind):
                folder = write_palette(ctx, f"{target} {kind}")
                special(kind, folder / target)
                return folder
            cases.append(palette_case(f"{target} is a {kind}", build))
    for kind in ("fifo", "loop", "zero", "socket"):
        def build(ctx, kind=kind):
            path = ctx.fresh(f"palette {kind}") / "palette.zip"
            special(kind, path)
            return path
        cases.append(palette_case(f"the palette path is a {kind}", build))

    def zipped(name: str, change: Callable[[Path], None]) -> None:
        def build(ctx):
            path = write_palette(ctx, name, as_zip=True)
            change(path)
            return path
        cases.append(palette_case(name, build))

    zipped("zip member scene.json flagged encrypted", lambda p: patch_zip(p, "scene.json", flags=0x1))
    zipped("zip member mask flagged encrypted", lambda p: patch_zip(p, "mask_1.png", flags=0x1))
    zipped("zip member with unknown compression", lambda p: patch_zip(p, "scene.json", method=99))
    zipped("zip member with a wrong CRC", lambda p: patch_zip(p, "mask_1.png", crc=0xDEADBEEF))
    zipped("zip member claiming 4 GB", lambda p: patch_zip(p, "scene.json", size=0xFFFFFFF0))
    zipped("zip member claiming 10 bytes", lambda p: patch_zip(p, "mask_1.png", size=10))
    zipped("zip cut in half", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]))

    def bomb(name: str, member: str, unpacked: int, unit: bytes) -> None:
        def build(ctx):
            return ctx.asset(f"bomb-{member}-{unpacked}.zip", lambda p: _bomb_zip(p, member, unpacked, unit))
        cases.append(palette_case(name, build))

    bomb('500 MB of "[]," zipped to 490 KB', "scene.json", 500 * 2 ** 20, b"[],")
    bomb("400 MB prompt zipped", "scene.json", 400 * 2 ** 20, b"aaaa")
    bomb('7 MB of "[]," zipped', "scene.json", 7 * 2 ** 20, b"[],")

    def sparse_prompt(ctx):
        folder = write_palette(ctx, "400 MB prompt")
        with open(folder / "scene.json", "wb") as f:
            f.write(b'{"height": 64, "width": 64, "layers": [{"prompt": "')
            f.truncate(400 * 2 ** 20)   # 400 MB (sparse): a prompt too long to read
        return folder
    cases.append(palette_case("400 MB prompt", sparse_prompt))

    def many_members(ctx):
        path = write_palette(ctx, "zip with 5000 members", as_zip=True)
        with zipfile.ZipFile(path, "a") as z:
            for i in range(5000):
                z.writestr(f"junk/{i}.txt", b"")
        return path
    cases.append(palette_case("zip with 5,000 members", many_members))

    images = {
        "PNG claiming 100000^2": png_header(100000, 100000),
        "PNG claiming 16384x8192": png_header(16384, 8192),
        "PNG claiming 12000^2 (bomb under PIL's limit)": png_header(12000, 12000),
        "PNG claiming 0x0": png_header(0, 0),
        "PNG of 16 bits": image_bytes("I;16", (64, 64)),
        "TIFF of floats": image_bytes("F", (64, 64), "TIFF"),
        "CMYK JPEG": image_bytes("CMYK", (64, 64), "JPEG"),
        "animated GIF": image_bytes("P", (64, 64), "GIF", save_all=True),
        "BMP": image_bytes("RGB", (64, 64), "BMP"),
        "EPS": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n",
        "empty file": b"",
        "text": b"not an image",
        "truncated PNG": image_bytes("RGBA", (64, 64))[:60],
    }
    for label, data in images.items():
        cases.append(palette_case(f"mask is a {label}", lambda ctx, label=label, data=data: write_palette(
            ctx, label, files={"mask_1.png": data})))
    return cases


def random_palette(rng: random.Random, i: int) -> Case:
    """One seeded random mutation of the valid palette: of a JSON value, its keys, its text or a file."""
    family = rng.choice(["value", "value", "value", "delete", "text", "file", "name", "special", "zip", "depth",
                         "brushes"])
    as_zip = rng.random() < 0.3
    label = f"random {i}: {family}{' (zip)' if as_zip else ''}"

    if family == "value":
        pick, hostile = rng.random(), hostile_json(rng)

        def build(ctx):
            d = base_dict(ctx)
            paths = _json_paths(d)
            path = paths[int(pick * len(paths))]
            return write_palette(ctx, label, text=with_hostile(d, path, hostile), as_zip=as_zip)
        return palette_case(f"{label} {hostile[:40]!r}", build)
    if family == "delete":
        pick = rng.random()

        def build(ctx):
            d = base_dict(ctx)
            paths = [p for p in _json_paths(d)]
            path = paths[int(pick * len(paths))]
            target = d
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]
            return write_palette(ctx, label, d, as_zip=as_zip)
        return palette_case(label, build)
    if family == "text":
        ops = [(rng.choice(["flip", "cut", "insert", "bom", "latin1", "nul"]), rng.random(), rng.randrange(256))
               for _ in range(rng.randint(1, 4))]

        def build(ctx):
            data = bytearray(json.dumps(base_dict(ctx)).encode())
            for op, where, byte in ops:
                at = int(where * len(data))
                if op == "flip" and data:
                    data[min(at, len(data) - 1)] = byte
                elif op == "cut":
                    del data[at:]
                elif op == "insert":
                    data[at:at] = bytes([byte]) * rng.choice([1, 3, 1000])
                elif op == "bom":
                    data[0:0] = b"\xef\xbb\xbf"
                elif op == "latin1":
                    data[at:at] = "é".encode("latin-1")
                elif op == "nul":
                    data[at:at] = b"\0"
            return write_palette(ctx, label, text=bytes(data), as_zip=as_zip)
        return palette_case(f"{label} {ops}", build)
    if family == "file":
        choice = rng.choice(["truncate", "flip", "random", "empty", "aspect", "huge-header", "transparent",
                             "wide", "jpeg", "palette-mode", "rgb-black"])
        cut, seed_bytes, length = rng.random(), rng.getrandbits(32), rng.choice([10, 1000, 100000])
        target = rng.choice(["mask_1.png", "mask_2.png"])
        huge = rng.choice([16385, 20000, 2 ** 31 - 1])

        def build(ctx):
            folder_data = {
                "random": random.Random(seed_bytes).randbytes(length),
                "empty": b"",
                "aspect": image_bytes("RGBA", (64, 32)),
                "huge-header": png_header(huge, 64),
                "transparent": image_bytes("RGBA", (64, 64), fill=(255, 0, 0, 0)),
                "wide": png_header(16000, 16000),
                "jpeg": image_bytes("RGB", (128, 128), "JPEG"),
                "palette-mode": image_bytes("P", (64, 64), fill=0, transparency=0),
                "rgb-black": image_bytes("RGB", (64, 64), fill=0),
            }
            path = write_palette(ctx, label)
            data = (path / target).read_bytes()
            if choice == "truncate":
                data = data[: int(cut * len(data))]
            elif choice == "flip":
                data = bytearray(data)
                at = int(cut * len(data))
                data[at] ^= 0xFF
                data = bytes(data)
            else:
                data = folder_data[choice]
            (path / target).write_bytes(data)
            if as_zip:
                zpath = path.parent / "p.zip"
                with zipfile.ZipFile(zpath, "w") as z:
                    for f in sorted(path.iterdir()):
                        z.write(f, f.name)
                return zpath
            return path
        return palette_case(f"{label} {choice} {target}", build)
    if family == "name":
        name = rng.choice(["mask_1.png\x00", "m" * 5000, "m" * 256 + ".png", "../mask_1.png", "/etc/passwd",
                           "C:\\mask.png", "", " ", "\ud800.png", "mask_1.png/", ".", "./mask_1.png", "sub/../x.png",
                           "~/x.png", "http://example.com/x.png", "mask_1.png" + "/" * 3000, "\\\\server\\share",
                           "%2e%2e/x", "mask_2.png", "scene.json"])
        layer = rng.randrange(2)

        def build(ctx):
            d = base_dict(ctx)
            d["layers"][layer]["mask"] = name
            return write_palette(ctx, label, text=json.dumps(d), as_zip=as_zip)
        return palette_case(f"{label} {name[:40]!r}", build)
    if family == "special":
        kind, target = rng.choice(SPECIALS), rng.choice(["scene.json", "mask_1.png", "mask_2.png"])

        def build(ctx):
            path = write_palette(ctx, label)
            special(kind, path / target)
            return path
        return palette_case(f"random {i}: {target} is a {kind}", build)
    if family == "zip":
        change = rng.choice(["encrypt", "method", "crc", "size", "cut", "dup", "two-tops", "escape", "comment",
                             "nested", "dir-entry"])
        member, cut = rng.choice(["scene.json", "mask_1.png", "mask_2.png"]), rng.random()

        def build(ctx):
            path = write_palette(ctx, label, as_zip=True)
            if change == "encrypt":
                patch_zip(path, member, flags=0x1)
            elif change == "method":
                patch_zip(path, member, method=rng.choice([1, 6, 12, 14, 95, 99, 65535]))
            elif change == "crc":
                patch_zip(path, member, crc=rng.getrandbits(32))
            elif change == "size":
                patch_zip(path, member, size=rng.choice([0, 1, 2 ** 31, 2 ** 32 - 1]))
            elif change == "cut":
                path.write_bytes(path.read_bytes()[: int(cut * path.stat().st_size)])
            else:
                with zipfile.ZipFile(path, "a") as z:
                    if change == "dup":
                        z.writestr(member, b"{}")
                    elif change == "two-tops":
                        z.writestr("a/scene.json", b"{}")
                        z.writestr("b/scene.json", b"{}")
                    elif change == "escape":
                        z.writestr("../../escape.png", b"x")
                    elif change == "comment":
                        z.comment = b"c" * 65535
                    elif change == "nested":
                        z.writestr("inner.zip", path.read_bytes())
                    elif change == "dir-entry":
                        z.writestr("scene.json/", b"")
            return path
        return palette_case(f"{label} {change} {member}", build)
    if family == "depth":
        depth, where = rng.choice([31, 32, 33, 200, 990, 3000, 100000]), rng.choice(["about", "background", "layers"])

        def build(ctx):
            d = base_dict(ctx)
            path = {"about": ("about",), "background": ("background", "image"), "layers": ("layers", 2)}[where]
            return write_palette(ctx, label, text=with_hostile(d, path, "[" * depth + "]" * depth), as_zip=as_zip)
        return palette_case(f"{label} {depth} deep in {where}", build)
    # brushes
    count, side = rng.choice([0, 1, 63, 64, 65, 200, 1100]), rng.choice([64, 128, 1024, 4096, 8192])

    def build(ctx):
        d = base_dict(ctx)
        d.update(height=side, width=side, layers=[{"prompt": f"thing {k}", "mask": "mask_1.png"} for k in range(count)])
        return write_palette(ctx, label, d, as_zip=as_zip)
    return palette_case(f"{label} {count} brushes on {side}^2", build)


# ---------------------------------------------------------------- API calls

def bad_values(rng: random.Random | None = None) -> list:
    import numpy as np
    import torch
    values = [None, True, False, 0, -1, 1, 3, 2 ** 31, 2 ** 63, 2 ** 64, -2 ** 64, 10 ** 400, 0.5, 1.5, -0.0,
              math.nan, math.inf, -math.inf, 1e300, -1e300, 5e-324, "", "7", "abc", "\ud800", "x" * 5000, "\x00",
              b"bytes", [], [1], {}, {"a": 1}, (1, 2), object(), (lambda *a, **k: None), np.int64(3),
              np.float32("nan"), np.array([1, 2]), np.bool_(True), Fraction(1, 3), Decimal("nan"), 1 + 1j,
              torch.tensor(1.5), torch.tensor([1, 2]), torch.tensor(7), "pil", "latent", "cpu", "cuda", "meta",
              "fp16", "tiny-sd15", "lcm", "discrete", "full", "self", "post", "attention", "multidiffusion", 64, 8,
              128, 1000, 10 ** 6, 1e6, "64"]
    return values


GENERATE_ARGS = ("seed", "method", "steps", "sampler", "quantize", "cover_alpha", "tile_size", "blend_background",
                 "regions", "callback", "output", "guidance", "guidance_mode", "bootstrap_steps",
                 "bootstrap_mix_steps", "centering", "leak_sensitivity", "batch_size", "aggregation", "nonsense")
STREAM_ARGS = ("seed", "quantize", "cover_alpha", "tile_size", "tiny_decode", "mask_cache_size", "prompt_cache_size",
               "regions", "guidance", "guidance_mode", "bootstrap_steps", "bootstrap_mix_steps", "centering",
               "leak_sensitivity", "batch_size", "aggregation", "nonsense")
LAYER_FIELDS = ("prompt", "mask", "name", "negative_prompt", "mask_strength", "mask_blur", "prompt_strength")
SCENE_FIELDS = ("height", "width", "layers", "background", "negative_prompt", "name", "extra")
BACKGROUND_FIELDS = ("prompt", "negative_prompt", "image")


def _tensor(value):
    import torch
    return torch.tensor(value)


def _array(values):
    import numpy as np
    return np.array(values)


def call_generate(**kwargs):
    def run_it(ctx):
        ctx.model.generate(ctx.scene, **{"seed": 0, **kwargs})
    return run_it


def call_stream(**kwargs):
    def run_it(ctx):
        session = ctx.model.stream(ctx.scene, **{"seed": 0, **kwargs})
        try:
            session.next_frame()
            session.next_frame()
        finally:
            session.close()
    return run_it


def call_layer(**fields):
    def run_it(ctx):
        from semantic_draw import Layer, Scene
        layer = Layer(**{"prompt": "a red apple", "mask": ctx.scene.layers[0].mask, **fields})
        ctx.model.generate(Scene(64, 64, [layer], ctx.scene.background), seed=0)
    return run_it


def call_scene(**fields):
    def run_it(ctx):
        from semantic_draw import Scene
        values = {"height": 64, "width": 64, "layers": ctx.scene.layers, "background": ctx.scene.background, **fields}
        ctx.model.generate(Scene(**values), seed=0)
    return run_it


def call_background(**fields):
    def run_it(ctx):
        from semantic_draw import Background, Scene
        ctx.model.generate(Scene(64, 64, ctx.scene.layers, Background(**{"prompt": "a table", **fields})), seed=0)
    return run_it


def call_session_edit(**fields):
    def run_it(ctx):
        session = ctx.model.stream(ctx.scene, seed=0)
        try:
            session.next_frame()
            session.edit_layer(0, **fields)
            session.next_frame()
        finally:
            session.close()
    return run_it


SESSION_CALLS = ("set_seed", "edit_background prompt", "edit_background image", "edit_layer key", "update",
                 "next_frame output", "run frames", "run time_limit", "run idle_wait", "run every_frame", "run edits",
                 "run slots")


def call_session(call: str, value):
    """One call on a running stream with ``value`` in one argument (a run is bounded by 3 frames or 5 s)."""
    def run_it(ctx):
        session = ctx.model.stream(ctx.scene, seed=0)
        try:
            session.next_frame()
            name, _, arg = call.partition(" ")
            if name == "run":
                bound = {"time_limit": 5.0} if arg == "frames" else {"frames": 3}
                for _ in session.run(**{**bound, arg: value}):
                    pass
            elif name in ("set_seed", "update"):
                getattr(session, name)(value)
            elif name == "edit_layer":
                session.edit_layer(value, prompt="a lighthouse")
            else:
                getattr(session, name)(**{arg: value})
            session.next_frame()
            session.stats()
        finally:
            session.close()
    return run_it


ENTRY_POINTS = {   # name: (its arguments, the runner that calls it with one of them changed)
    "generate": (GENERATE_ARGS, call_generate), "stream": (STREAM_ARGS, call_stream),
    "Layer": (LAYER_FIELDS, call_layer), "Scene": (SCENE_FIELDS, call_scene),
    "Background": (BACKGROUND_FIELDS, call_background), "edit_layer": (LAYER_FIELDS, call_session_edit),
}


def call_load_palette(path_of: Callable[[Ctx], object]):
    def run_it(ctx):
        from semantic_draw import Scene
        Scene.load(path_of(ctx))
    return run_it


def fifo_path(ctx):
    path = ctx.fresh("fifo") / "palette.zip"
    os.mkfifo(path)
    return path


def call_preset(**kwargs):
    def run_it(ctx):
        from semantic_draw import SemanticDraw
        SemanticDraw.from_preset(**{"name": MODEL, **kwargs})
    return run_it


def call_load(**kwargs):
    def run_it(ctx):
        from semantic_draw import SemanticDraw
        SemanticDraw.load(**kwargs)
    return run_it


def call_pretrained(make: Callable[[Ctx], object], **kwargs):
    """from_pretrained on what `make(ctx)` returns (a path, usually a broken or malicious checkpoint)."""
    def run_it(ctx):
        from semantic_draw import SemanticDraw
        SemanticDraw.from_pretrained(make(ctx), **kwargs)
    return run_it


def safetensors_bytes(header, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


MALICIOUS_HEADERS = {
    "empty file": b"",
    "3 bytes": b"abc",
    "header length 2**64-1": struct.pack("<Q", 2 ** 64 - 1) + b"{}",
    "header length past the end": safetensors_bytes({}, length=10 ** 6),
    "header length 0": safetensors_bytes(b"", length=0),
    "header not JSON": safetensors_bytes(b"{not json"),
    "header not UTF-8": safetensors_bytes(b'{"\xff": 1}'),
    "header a list": safetensors_bytes([1, 2]),
    "header nested 100,000 deep": safetensors_bytes(b"[" * 100000 + b"]" * 100000),
    "header with a 5,000-digit number": safetensors_bytes(
        b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}', b"\0" * 4),
    "unknown dtype": safetensors_bytes({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16),
    "dtype missing": safetensors_bytes({"w": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
    "entry not an object": safetensors_bytes({"w": [1, 2, 3]}),
    "negative shape": safetensors_bytes({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
    "float shape": safetensors_bytes({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, b"\0" * 4),
    "huge shape": safetensors_bytes({"w": {"dtype": "F32", "shape": [2 ** 62, 2 ** 62], "data_offsets": [0, 4]}},
                                    b"\0" * 4),
    "reversed offsets": safetensors_bytes({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4),
    "offsets past the end": safetensors_bytes({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}},
                                              b"\0" * 4),
    "offsets not matching the shape": safetensors_bytes(
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
    "overlapping tensors": safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                                             b"\0" * 12),
    "a gap between tensors": safetensors_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                                                "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
                                               b"\0" * 12),
    "trailing bytes": safetensors_bytes({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 40),
    "metadata not text": safetensors_bytes({"__metadata__": {"a": 1}}),
    "metadata a list": safetensors_bytes({"__metadata__": [1]}),
    "offsets of text": safetensors_bytes({"w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}},
                                         b"\0" * 4),
    "lone surrogate key": safetensors_bytes(b'{"\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
                                            b"\0" * 4),
}


def junk_weights(kind: str) -> Callable[[Ctx], Path]:
    """Checkpoints with valid headers and junk inside: wrong shapes, unrelated keys, half the keys, NaN text."""
    def make(ctx: Ctx) -> Path:
        import torch
        from safetensors.torch import save_file
        folder = ctx.fresh(f"junk {kind}")
        path = folder / "model.safetensors"
        if kind == "wrong shapes":
            save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(3, 3),
                       "first_stage_model.encoder.conv_in.weight": torch.zeros(1),
                       "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(2)},
                      str(path))
        elif kind == "unrelated keys":
            save_file({"some.weight": torch.zeros(2)}, str(path))
        elif kind == "no tensors":
            save_file({}, str(path))
        elif kind == "truncated":
            save_file({"model.diffusion_model.x": torch.zeros(100)}, str(path))
            path.write_bytes(path.read_bytes()[:-50])
        return path
    return make


def folder_case(kind: str) -> Callable[[Ctx], Path]:
    """A copy of the tiny pipeline folder with one thing broken (or, for 'unrelated pt', with an unrelated
    pickle file in a nested folder, which must load)."""
    def make(ctx: Ctx) -> Path:
        folder = ctx.fresh(f"pipeline {kind}") / "pipe"
        shutil.copytree(ctx.pipeline_folder(), folder)
        if kind == "unrelated pt":
            (folder / "extras" / "old").mkdir(parents=True)
            (folder / "extras" / "old" / "model.pt").write_bytes(b"pickle")
        elif kind == "model_index not JSON":
            (folder / "model_index.json").write_text("{oops")
        elif kind == "model_index a list":
            (folder / "model_index.json").write_text("[1]")
        elif kind == "model_index escaping component":
            d = json.loads((folder / "model_index.json").read_text())
            d["../../etc"] = ["diffusers", "UNet2DConditionModel"]
            (folder / "model_index.json").write_text(json.dumps(d))
        elif kind == "model_index odd class":
            d = json.loads((folder / "model_index.json").read_text())
            d["_class_name"] = ["not", "a", "name"]
            (folder / "model_index.json").write_text(json.dumps(d))
        elif kind == "unet config not JSON":
            (folder / "unet" / "config.json").write_text("{oops")
        elif kind == "unet config wrong":
            d = json.loads((folder / "unet" / "config.json").read_text())
            d["block_out_channels"] = [7]
            (folder / "unet" / "config.json").write_text(json.dumps(d))
        elif kind == "unet weights malicious header":
            for f in (folder / "unet").glob("*.safetensors"):
                f.write_bytes(MALICIOUS_HEADERS["overlapping tensors"])
        elif kind == "unet weights of another model":
            from safetensors.torch import save_file
            import torch
            for f in (folder / "unet").glob("*.safetensors"):
                save_file({"conv_in.weight": torch.zeros(1, 1, 1, 1)}, str(f))
        elif kind == "unet weights a fifo":
            for f in (folder / "unet").glob("*.safetensors"):
                special("fifo", f)
        elif kind == "unet weights a loop":
            for f in (folder / "unet").glob("*.safetensors"):
                special("loop", f)
        return folder
    return make


def file_of(data: bytes, name: str = "model.safetensors") -> Callable[[Ctx], Path]:
    def make(ctx: Ctx) -> Path:
        path = ctx.fresh(name) / name
        path.write_bytes(data)
        return path
    return make


def named_calls() -> list[Case]:
    """The issue's bad calls and invalid values, by name."""
    import numpy as np
    from semantic_draw import Layer
    c = []

    def add(name, run_it):
        c.append(Case("call: " + name, run_it))

    for value in (2 ** 64, math.nan, None, [1], 1.5, "3", -1, True):
        add(f"generate seed={value!r}", call_generate(seed=value))
    for name, kwargs in [("guidance='7'", {"guidance": "7"}), ("batch_size=1.5", {"batch_size": 1.5}),
                         ("steps='4'", {"steps": "4"}), ("steps=1000", {"steps": 1000}), ("steps=0", {"steps": 0}),
                         ("callback=5", {"callback": 5}), ("output='bogus'", {"output": "bogus"}),
                         ("guidance=-1", {"guidance": -1}), ("guidance=nan", {"guidance": math.nan}),
                         ("guidance=inf", {"guidance": math.inf}), ("cover_alpha=nan", {"cover_alpha": math.nan}),
                         ("cover_alpha=-1", {"cover_alpha": -1}), ("cover_alpha=2", {"cover_alpha": 2}),
                         ("tile_size=0", {"tile_size": 0}), ("tile_size=-8", {"tile_size": -8}),
                         ("tile_size=3", {"tile_size": 3}), ("leak_sensitivity=nan", {"leak_sensitivity": math.nan}),
                         ("bootstrap_mix_steps=nan", {"bootstrap_mix_steps": math.nan}),
                         ("centering='yes'", {"centering": "yes"}), ("quantize='x'", {"quantize": "x"}),
                         ("sampler=['lcm']", {"sampler": ["lcm"]}), ("method=None", {"method": None}),
                         ("regions=array([1, 2])", {"regions": _array([1, 2])}), ("regions=None", {"regions": None}),
                         ("method=array([1, 2])", {"method": _array([1, 2])})]:
        add(f"generate {name}", call_generate(**kwargs))
    for name, kwargs in [("seed=1.5", {"seed": 1.5}), ("seed='3'", {"seed": "3"}), ("guidance=nan",
                                                                                     {"guidance": math.nan}),
                         ("tile_size=3", {"tile_size": 3}), ("tiny_decode=None", {"tiny_decode": None}),
                         ("mask_cache_size=-1", {"mask_cache_size": -1}),
                         ("regions=array([1, 2])", {"regions": _array([1, 2])})]:
        add(f"stream {name}", call_stream(**kwargs))
    add("mask_blur=1e300", call_layer(mask_blur=1e300))
    add("mask_blur=2**63", call_layer(mask_blur=2 ** 63))
    add("mask_blur=10**400", call_layer(mask_blur=10 ** 400))
    add("mask_blur=1e6 on a 64 px scene", call_layer(mask_blur=1e6))
    add("mask_blur=256 on a 64 px scene", call_layer(mask_blur=256))
    add("surrogate prompt", call_layer(prompt="\ud800"))
    add("surrogate negative prompt", call_layer(negative_prompt="a \udc80"))
    add("surrogate background prompt", call_background(prompt="\udfff"))
    add("400 MB prompt", lambda ctx: call_layer(prompt="a" * (400 * 2 ** 20))(ctx))
    add("1,100 brushes", call_scene(layers=[Layer(f"p{i}", np.ones((64, 64), bool)) for i in range(1100)]))
    add("64 brushes on 8192^2", call_scene(height=8192, width=8192,
                                           layers=[Layer(f"p{i}", np.ones((8, 8), bool)) for i in range(64)]))
    add("surrogate edit_layer prompt", call_session_edit(prompt="\ud800"))
    add("Scene.save to a lone surrogate name",
        lambda ctx: ctx.scene.save(ctx.fresh("save") / "\ud800"))        # found by the long fuzz run (seed 37)
    add("from_preset compile_cache with a lone surrogate",
        lambda ctx: call_preset(compile=True, compile_cache=str(ctx.fresh("cache") / "\ud800"))(ctx))
    add("compile_ahead into a lone surrogate folder",
        lambda ctx: ctx.model.compile_ahead(ctx.fresh("ahead") / "\udfff"))
    add("session.next_frame output=array([1, 2])",                      # found by the long fuzz run (seed 91)
        call_session("next_frame output", _array([1, 2])))
    add("Scene.resized(tensor(32))", lambda ctx: ctx.scene.resized(_tensor(32), None).resized(_tensor(7), None))
    add("edit_layer mask_blur=nan", call_session_edit(mask_blur=math.nan))
    add("Scene.load(None)", call_load_palette(lambda ctx: None))
    add("Scene.load(a FIFO)", call_load_palette(fifo_path))
    add("Scene.load('/dev/zero')", call_load_palette(lambda ctx: "/dev/zero"))
    add("Scene.load(NUL)", call_load_palette(lambda ctx: "palette\x00.zip"))
    add("Scene.load(5,000 characters)", call_load_palette(lambda ctx: "p" * 5000))
    add("from_preset(device='cuda') on a CPU build", call_preset(device="cuda"))
    add("from_preset(foo=1)", call_preset(foo=1))
    add("from_preset(device='meta')", call_preset(device="meta"))
    add("from_preset(max_pixels=-1)", call_preset(max_pixels=-1))
    add("from_preset(share_calls='yes')", call_preset(share_calls="yes"))
    add("from_preset(share_calls=None)", call_preset(share_calls=None))
    add("from_preset(compile_shapes='both')", call_preset(compile_shapes="both"))
    add("from_preset(compile_shapes=None)", call_preset(compile_shapes=None))
    add("from_preset(name=None)", call_preset(name=None))
    add("load(model=..., preset=...)", call_load(preset="tiny-sd15", model="x"))
    add("from_pretrained(loras=5)", call_pretrained(lambda ctx: ctx.pipeline_folder(), loras=5))
    add("from_pretrained(guidance=nan)", call_pretrained(lambda ctx: ctx.pipeline_folder(), guidance=math.nan))
    add("from_pretrained(bogus=1)", call_pretrained(lambda ctx: ctx.pipeline_folder(), bogus=1))
    add("pipeline folder with an unrelated nested .pt", call_pretrained(folder_case("unrelated pt")))
    for label, data in MALICIOUS_HEADERS.items():
        add(f"safetensors {label}", call_pretrained(file_of(data)))
    for kind in ("wrong shapes", "unrelated keys", "no tensors", "truncated"):
        add(f"junk weights: {kind}", call_pretrained(junk_weights(kind)))
    for kind in ("model_index not JSON", "model_index a list", "model_index escaping component",
                 "model_index odd class", "unet config not JSON", "unet config wrong",
                 "unet weights malicious header", "unet weights of another model", "unet weights a fifo",
                 "unet weights a loop"):
        add(f"pipeline folder: {kind}", call_pretrained(folder_case(kind)))
    return c


def random_call(rng: random.Random, i: int) -> Case:
    """One seeded random bad call: a bad value for one argument of one entry point."""
    values = bad_values()
    index = rng.randrange(len(values))
    value = values[index]
    shown = _short(value)
    target = rng.choice(["generate", "generate", "stream", "Layer", "Scene", "Background", "edit_layer",
                         "palette-api", "load", "checkpoint", "session"])
    if target == "session":
        call = rng.choice(SESSION_CALLS)
        return Case(f"call: random {i}: session.{call}={shown}", call_session(call, value))
    if target in ENTRY_POINTS:
        names, runner = ENTRY_POINTS[target]
        arg = rng.choice(names)
        return Case(f"call: random {i}: {target} {arg}={shown}", runner(**{arg: value}))
    if target == "palette-api":
        method = rng.choice(["load", "save", "resized", "preview", "from_dict", "validate"])

        def run_it(ctx, method=method, value=value):
            from semantic_draw import Scene
            scene = ctx.scene
            if method == "load":
                Scene.load(value)
            elif method == "save":
                if isinstance(value, (str, bytes)) and value:   # a relative name: inside this case's folder
                    value = ctx.fresh("save") / os.fsdecode(value)[:200]
                scene.save(value)
            elif method == "resized":
                scene.resized(value, None)
            elif method == "preview":
                scene.preview(value)
            elif method == "from_dict":
                Scene.from_dict({"height": 64, "width": 64, "layers": [{"prompt": "x", "mask": value}]}).validate()
            else:
                scene.validate(max_side=value)
        return Case(f"call: random {i}: Scene.{method}({shown})", run_it)
    if target == "load":
        arg = rng.choice(["name", "device", "dtype", "max_pixels", "share_calls", "compile_shapes", "nonsense"])
        if arg == "name" and isinstance(value, str) and value == MODEL:
            value = "tiny-sd16"
        return Case(f"call: random {i}: from_preset({arg}={shown})", call_preset(**{arg: value}))
    label = rng.choice(list(MALICIOUS_HEADERS))
    cut = rng.random()

    def make(ctx, label=label, cut=cut):
        data = bytearray(MALICIOUS_HEADERS[label] or safetensors_bytes({}))
        if data:
            data[int(cut * (len(data) - 1))] ^= 0x5A   # one more byte changed
        return file_of(bytes(data))(ctx)
    return Case(f"call: random {i}: safetensors {label} (one byte changed)", call_pretrained(make))


def _short(value) -> str:
    try:
        text = repr(value)
    except Exception:
        text = type(value).__name__
    return text if len(text) <= 40 else text[:40] + "..."


# ================================================================ command line

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--palettes", type=int, default=1000, help="malformed palettes to load (default 1000)")
    parser.add_argument("--calls", type=int, default=250, help="bad API calls to make (default 250)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=CASE_TIMEOUT, help="seconds a case may take (default 20)")
    parser.add_argument("--memory", type=int, default=MEMORY_CAP, help="bytes of address space of a worker")
    parser.add_argument("--verbose", action="store_true", help="print every case and its outcome")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args)
        return 0
    began = time.monotonic()
    results, peak = run(args.palettes, args.calls, args.seed, args.timeout, args.memory, args.verbose)
    print(table(results, peak, args.memory))
    print(f"{len(results)} cases in {time.monotonic() - began:.0f} s (seed {args.seed})")
    failed = [r for r in results if r.outcome in FAILURES]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
