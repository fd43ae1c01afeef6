"""Ahead-of-time programs kept in a folder, so that a restarted process is warm without tracing the network.

torch.compile's cache (compiled.py) keeps the code inductor generated, but a new process still traces the network
with dynamo before each graph finds that code: seconds per graph for a full-size UNet, before the first frame. Here
the network's calls are exported and compiled by AOTInductor instead, through the same path as on ZeroGPU
(``compiled.compile_ahead_of_time``, which this module serves as its compiler), and every program is saved as a
package without its weights, listed in an index with the inputs it takes. The VAE decoders get programs too, one
per whole-canvas latent shape (``DecoderPrograms`` takes a decoder's place and runs the decoder as it was for
other shapes). A later process loads the packages and hands them the modules' own parameters (no copy):
milliseconds a program, nothing traced.

The folder's name carries what a program depends on: torch's and diffusers' versions, the device, the network's
family, size and dtype, and the source of ``backbones/`` (whose attention processors are traced into the programs).
Anything else that does not fit (a damaged file, other weights' names) costs only the program: it is compiled again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import uuid
from pathlib import Path
from unittest import mock

import torch

from .backbones.common import TILE_ABOVE_PIXELS

log = logging.getLogger("semantic_draw.packages")

INDEX = "index.json"
INDEX_LOCK = "index.lock"      # held while a process reads, merges and writes the index


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` between processes (and threads, each opening the file itself), where the
    system offers one (fcntl); elsewhere nothing: two saves at once may then drop one's new entries (programs
    compiled again later, nothing else lost)."""
    try:
        import fcntl
    except ImportError:          # Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def folder_key(backbone) -> str:
    """What the programs of ``backbone``'s network depend on, hashed."""
    import diffusers
    if backbone.device.type == "cuda":
        dev = torch.cuda.get_device_name(backbone.device)
    else:           # a CPU program's kernels use the vector instructions of the CPU they were compiled on
        dev = f"{backbone.device.type}-{torch.backends.cpu.get_cpu_capability()}"
    params = sum(p.numel() for p in backbone.denoiser.parameters())
    params = f"{params}/" + "/".join(str(sum(p.numel() for p in d.parameters())) for _, d in decoders(backbone))
    source = hashlib.sha1()
    for path in sorted((Path(__file__).parent / "backbones").glob("*.py")):
        source.update(path.read_bytes())
    key = (f"{torch.__version__}|{diffusers.__version__}|{dev}|{backbone.family}|{params}|{backbone.dtype}|"
           f"{source.hexdigest()}")
    return hashlib.sha1(key.encode()).hexdigest()[:16]


class Run:
    """A loaded program: called as the network module is."""

    def __init__(self, loaded, path: Path):
        self.loaded, self.path = loaded, path

    def __call__(self, *args, **kwargs):
        return self.loaded(*args, **kwargs)


class Packages:
    """The programs of one model's network in ``folder`` (a subfolder per ``folder_key``). Offers what
    ``compile_ahead_of_time`` asks of its compiler (spaces' ``aoti_capture`` and ``aoti_compile``), ``load`` for the
    programs saved before and ``save`` for the index."""

    def __init__(self, folder: str | Path, backbone):
        self.backbone = backbone
        self.folder = Path(folder).expanduser() / f"programs-{backbone.family}-{folder_key(backbone)}"
        self.compiled = 0            # programs compiled by this process
        self.loaded = 0              # programs loaded from the folder

    # -- the compiler of compile_ahead_of_time ----------------------------------------------------------------
    @staticmethod
    def aoti_capture(module):
        """A context whose ``module(...)`` call is recorded (as the module's forward receives it), not run."""
        class Call:
            args, kwargs = (), {}

        class Captured(Exception):
            pass

        call = Call()

        def record(*args, **kwargs):
            call.args, call.kwargs = args, kwargs
            raise Captured

        @contextlib.contextmanager
        def capturing():
            with mock.patch.object(module, "forward", record):
                try:
                    yield call
                except Captured:
                    pass
        return capturing()

    def aoti_compile(self, exported, module: torch.nn.Module | None = None) -> Run:
        """Compile an exported program of ``module`` (default: the network) to a package in the folder (weights
        left out) and load it with the module's parameters."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"program-{uuid.uuid4().hex[:12]}.pt2"
        tmp = path.with_suffix(".tmp.pt2")
        try:
            torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp),
                                                     inductor_configs={"aot_inductor.package_constants_in_so": False})
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        self.compiled += 1
        return self._load(path, module)

    def _load(self, path: Path, module: torch.nn.Module | None = None) -> Run:
        """Load a package and hand it ``module``'s parameters (default: the network's)."""
        loaded = torch._inductor.aoti_load_package(str(path))
        module = module if module is not None else self.backbone.denoiser
        weights = {**dict(module.named_parameters()), **dict(module.named_buffers())}   # non-persistent ones too
        names = loaded.get_constant_fqns()
        missing = [name for name in names if name not in weights]
        if missing:
            raise KeyError(f"the network has no {missing[0]!r}")
        loaded.load_constants({name: weights[name] for name in names}, check_full_update=True, user_managed=True)
        return Run(loaded, path)

    # -- the decoders ---------------------------------------------------------------------------------------------
    def compile_decoders(self, canvases) -> int:
        """The VAE's and the tiny VAE's decoders compiled ahead of time for a whole-canvas decode of each of
        ``canvases`` (one latent; static shapes: a tiled decode of a large canvas keeps the decoder it had), unless
        a program for that shape is there already. Returns how many were compiled."""
        made = 0
        for name, decoder in decoders(self.backbone):
            ahead = install_decoder_programs(self.backbone, name)
            for height, width in canvases:
                if height * width > TILE_ABOVE_PIXELS:
                    continue
                latent = torch.zeros(1, self.backbone.latent_channels, height // self.backbone.vae_factor,
                                     width // self.backbone.vae_factor)
                with self.aoti_capture(ahead) as call:        # the decoder's input, as the VAE passes it
                    self.backbone.decode(latent, tiny=name == "tiny_vae")
                shape = tuple(call.args[0].shape) if call.args and not call.kwargs else None
                if shape is None or shape in ahead.programs:
                    continue
                try:
                    with torch.no_grad():
                        exported = torch.export.export(decoder, call.args)
                    ahead.programs[shape] = self.aoti_compile(exported, decoder)
                except Exception as err:     # that decode stays as it was; the other decoders and shapes go on
                    from .compiled import compile_error
                    log.warning("the %s decoder was not compiled ahead of time for %s (%s)", name, shape,
                                compile_error(err))
                    continue
                made += 1
        return made

    # -- the index ------------------------------------------------------------------------------------------------
    def save(self, programs: dict) -> Path | None:
        """Write the index of every program of ``programs`` (view shape -> Programs) that lives in this folder, and
        of the decoders' programs, keeping the entries another process listed before (whose files are there):
        processes sharing a folder each add their programs, even when they save at the same moment (the read, merge
        and write hold a lock), and a reader never sees half an index."""
        from torch.utils._pytree import treespec_dumps
        entries = [{"file": p.run.path.name, "view": list(view), "spec": treespec_dumps(p.spec),
                    "sizes": [[_size(s) for s in sizes] for sizes in p.sizes], "regions": p.regions}
                   for view, ps in programs.items() for p in ps
                   if isinstance(p.run, Run) and p.run.path.parent == self.folder]
        for name, _ in decoders(self.backbone):
            ahead = decoder_programs(self.backbone, name)
            entries += [{"file": run.path.name, "decoder": name, "shape": list(shape)}
                        for shape, run in (ahead.programs.items() if ahead is not None else ())
                        if run.path.parent == self.folder]
        index = self.folder / INDEX
        if not entries and not index.is_file():
            return None
        with _locked(self.folder / INDEX_LOCK):    # read, merge and write as one: no other save in between
            unique = {entry["file"]: entry for entry in self._listed(index) + entries}   # each program listed once
            entries = list(unique.values())
            if not entries:
                return None
            tmp = index.with_name(f"{INDEX}.{uuid.uuid4().hex[:12]}.tmp")
            try:
                tmp.write_text(json.dumps(entries, indent=1))
                tmp.replace(index)
            finally:
                tmp.unlink(missing_ok=True)
        return index

    def _listed(self, index: Path) -> list[dict]:
        """The entries of the index on disk whose program files are there (none if it is missing or damaged)."""
        try:
            listed = json.loads(index.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(listed, list):
            return []
        return [entry for entry in listed
                if _entry(entry) and (self.folder / Path(entry["file"]).name).is_file()]

    def load(self) -> dict:
        """The programs saved in the folder (view shape -> Programs), each handed the network's weights; an entry
        that cannot be loaded is left out (its calls are compiled again)."""
        from torch.utils._pytree import treespec_loads
        from .compiled import Program
        index = self.folder / INDEX
        if not index.is_file():
            return {}
        try:
            entries = json.loads(index.read_text())
            if not isinstance(entries, list):
                raise ValueError("not a list of programs")
        except (OSError, ValueError) as err:
            log.warning("ignored the program index %s (%s)", index, err)
            return {}
        programs: dict[tuple, list] = {}
        known = dict(decoders(self.backbone))
        seen = set()
        for entry in entries:
            if not _entry(entry) or entry["file"] in seen:
                log.warning("ignored an entry of the program index %s: %.80r", index, entry)
                continue
            seen.add(entry["file"])
            try:
                if "decoder" in entry:        # a decoder's program: installed on that decoder at once
                    name = entry["decoder"]
                    if name not in known:
                        raise KeyError(f"this model has no {name}")
                    run = self._load(self.folder / Path(entry["file"]).name, known[name])
                    install_decoder_programs(self.backbone, name).programs[tuple(entry["shape"])] = run
                    self.loaded += 1
                    continue
                run = self._load(self.folder / Path(entry["file"]).name)
                program = Program(run, treespec_loads(entry["spec"]),
                                  [tuple(_unsize(s) for s in sizes) for sizes in entry["sizes"]],
                                  bool(entry["regions"]))
            except Exception as err:     # a damaged or stale program costs only its own compile
                log.warning("ignored the saved program %s (%s); its calls are compiled again", entry["file"], err)
                (self.folder / Path(entry["file"]).name).unlink(missing_ok=True)
                continue
            programs.setdefault(tuple(entry["view"]), []).append(program)
            self.loaded += 1
        if self.loaded:
            log.info("loaded %d ahead-of-time program(s) from %s", self.loaded, self.folder)
        return programs


def _entry(entry) -> bool:
    """Whether an index entry has the form of one: an object naming its program's file."""
    return isinstance(entry, dict) and isinstance(entry.get("file"), str)


def _size(size):
    """A Program's size (an int, None or a (lowest, highest) range) as JSON."""
    if isinstance(size, tuple):
        return [size[0], None if size[1] == math.inf else size[1]]
    return size


def _unsize(size):
    if isinstance(size, list):
        return size[0], math.inf if size[1] is None else size[1]
    return size


# -- the decoders' programs ----------------------------------------------------------------------------------------
def vaes(backbone) -> list[tuple[str, object]]:
    """("vae" | "tiny_vae", the VAE) of each VAE the backbone has."""
    found = [("vae", getattr(getattr(backbone, "pipe", None), "vae", None)),
             ("tiny_vae", getattr(backbone, "tiny_vae", None))]
    return [(name, vae) for name, vae in found if vae is not None]


def decoders(backbone) -> list[tuple[str, torch.nn.Module]]:
    """("vae" | "tiny_vae", decoder network) of the backbone's VAEs, their eager modules (under any wrapper)."""
    found = []
    for name, vae in vaes(backbone):
        decoder = getattr(vae, "decoder", None)
        while isinstance(decoder, DecoderPrograms) or hasattr(decoder, "_orig_mod"):
            decoder = decoder.inner if isinstance(decoder, DecoderPrograms) else decoder._orig_mod
        if isinstance(decoder, torch.nn.Module):
            found.append((name, decoder))
    return found


class DecoderPrograms(torch.nn.Module):
    """What a VAE's ``decoder`` becomes: programs by input shape, and ``inner`` (the decoder as it was: eager, or
    torch.compile's) for any other input."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.programs: dict[tuple, Run] = {}
        self.fallbacks = 0

    def forward(self, sample, *args, **kwargs):
        run = None if (args or kwargs) else self.programs.get(tuple(sample.shape))
        if run is None:
            self.fallbacks += 1
            return self.inner(sample, *args, **kwargs)
        return run(sample)


def _vae(backbone, name: str):
    return dict(vaes(backbone)).get(name)


def decoder_programs(backbone, name: str) -> DecoderPrograms | None:
    decoder = getattr(_vae(backbone, name), "decoder", None)
    return decoder if isinstance(decoder, DecoderPrograms) else None


def install_decoder_programs(backbone, name: str) -> DecoderPrograms:
    """The DecoderPrograms of the ``name`` VAE, put in place of its decoder if it is not there yet."""
    vae = _vae(backbone, name)
    if not isinstance(vae.decoder, DecoderPrograms):
        vae.decoder = DecoderPrograms(vae.decoder)
    return vae.decoder
