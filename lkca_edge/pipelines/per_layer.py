"""Where an artifact drifts from its source: every layer's output against the fp32 source's, on
real images.

The comparison is written once, here. Each backend's runner contributes only its own facts: its
graph (``tensor_graph``) and a run of the artifact with chosen graph tensors as extra outputs
(``run_with_taps``); ``converters._graph.locate_layers`` finds the source model's layers in that
graph by structure. The artifact runs in an isolated child (a runtime crash is one line); the
reference layer outputs are written to temporary files for it, a chunk of images at a time, and
the child reads them memory-mapped, so neither side holds every layer of every image and the
child returns only the error figures. Core ML on Linux cannot run: its backend contributes the per-layer values of the
torch source with the package's stored weights (``static_layer_outputs``), labelled static.

Sensitivity: how much error a layer adds to the residual stream, as the stream's noise-to-signal
power ratio after the layer minus before it. The three largest are the "worst" layers a failing
export names, and the order in which mixed precision keeps layers in float.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lkca_edge.errors import UserError
from lkca_edge.fileio import final_name, temporary_directory

CHUNK = 32  # images per tapped run in the child: bounds its memory for any test-set size
WORST = 3
ROUNDING_NOISE = 1e-8  # added noise/signal below this (80 dB) is float rounding, not a culprit


@dataclass
class LayerError:
    """One layer of the source model: its artifact output against the fp32 source's."""

    name: str
    sqnr_db: float
    max_abs_err: float
    cosine: float
    mean_abs_err: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PerLayerResult:
    backend: str
    precision: str
    recipe: str
    mode: str                      # "measured": the artifact's runtime | "static": not run here
    n_images: int
    layers: list[LayerError]
    sensitivity: list[dict]        # [{name, added_noise, sqnr_db}], most error added first
    method: str                    # how the intermediate values were read
    tap_logit_shift: float | None  # max |logits with taps - logits without| (None: not run)
    missing: dict[str, str] = field(default_factory=dict)   # layer -> why it has no entry
    note: str = ""

    @property
    def worst(self) -> list[str]:
        return [s["name"] for s in self.sensitivity[:WORST] if s["added_noise"] > ROUNDING_NOISE]

    def worst_text(self) -> str:
        by_name = {layer.name: layer for layer in self.layers}
        parts = []
        for name in self.worst:
            layer = by_name.get(name)
            parts.append(f"{name} (SQNR {layer.sqnr_db:.1f} dB)" if layer else name)
        return ", ".join(parts) or "none (no layer adds more than float rounding)"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["worst"] = self.worst
        return d


# -- the reference --------------------------------------------------------------------------------
def reference_layers(model, images: np.ndarray) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """The fp32 source's layer outputs and residual stream (entering block 0, then after each
    residual addition) for ``images``. ``patch_embed`` is the embedding with the positions added
    (the stream entering block 0), as ``converters._graph`` locates it."""
    from lkca_edge.evaluation import layer_outputs

    ref = layer_outputs(model, images)
    depth = model.config.depth
    stream = [ref["patch_embed"]]
    for b in range(depth):
        stream.append(stream[-1] + ref[f"blocks.{b}.mixer"])
        stream.append(ref[f"blocks.{b}"])
    return ref, stream


def stream_sources(depth: int) -> dict[str, str]:
    """Residual-stream points that are a layer's output: entering block 0 is ``patch_embed``,
    after block b's second residual addition is ``blocks.b``. Only the point after each mixer's
    residual addition is a tensor of its own."""
    return {"stream.0": "patch_embed",
            **{f"stream.{2 * b + 2}": f"blocks.{b}" for b in range(depth)}}


def write_reference(model, images: np.ndarray, directory: Path) -> list[str]:
    """The reference layer values for ``images`` as one ``<key>.npy`` per tensor in ``directory``
    (written CHUNK images at a time, so memory stays bounded for any number of images); returns
    the layer names in execution order. The stream points ``stream_sources`` names are not
    written again."""
    depth = model.config.depth
    files: dict[str, np.ndarray] = {}
    order: list[str] = []
    for i in range(0, len(images), CHUNK):
        ref, stream = reference_layers(model, images[i:i + CHUNK])
        if not order:
            order = list(ref)
        values = {**ref, **{f"stream.{2 * b + 1}": stream[2 * b + 1] for b in range(depth)}}
        for key, value in values.items():
            if key not in files:
                files[key] = np.lib.format.open_memmap(
                    directory / f"{key}.npy", mode="w+", dtype=np.float32,
                    shape=(len(images), *value.shape[1:]))
            files[key][i:i + len(value)] = value
    for f in files.values():
        f.flush()
    return order


# -- measured in the artifact's own runtime (an isolated child) -------------------------------------
def _in_runtime(backend_name: str, path: str, images: np.ndarray, reference_dir: str,
                dims: tuple[int, int, int], threads: int) -> dict:
    """Runs inside the isolated child: the artifact's layer values against the reference ones
    (``write_reference``'s files, memory-mapped: each chunk reads only its own images)."""
    from lkca_edge.converters import get_backend
    from lkca_edge.converters._graph import locate_layers
    from lkca_edge.gates import ErrorStats
    from lkca_edge.logs import quiet

    files = {p.stem: p for p in Path(reference_dir).glob("*.npy")}
    files.update({k: files[v] for k, v in stream_sources(dims[0]).items() if v in files})
    reference = {k: np.load(p, mmap_mode="r") for k, p in files.items()}
    with quiet():
        runner = get_backend(backend_name).load(path, threads=threads)
        if not runner.tap_method:
            raise UserError(f"the {backend_name} runner exposes no intermediate tensors")
        graph = runner.tensor_graph()
        where = locate_layers(graph, *dims)
        taps = list(dict.fromkeys([*where.values.values(), *where.stream]))
        stats = {k: ErrorStats() for k in reference}
        shift = 0.0
        for i in range(0, len(images), CHUNK):
            batch = images[i:i + CHUNK]
            plain = runner.run_many(batch)
            logits, values = runner.run_with_taps(batch, taps)
            shift = max(shift, float(np.abs(np.asarray(logits) - plain).max()))
            named = {name: values[v] for name, v in where.values.items() if v in values}
            named.update({f"stream.{k}": values[v] for k, v in enumerate(where.stream)
                          if v in values})
            for key, acc in stats.items():
                if key in named:
                    try:
                        acc.update(reference[key][i:i + CHUNK], named[key])
                    except ValueError as exc:
                        where.missing[key] = f"the artifact's tensor has a different size ({exc})"
    for key, v in [*where.values.items(), *((f"stream.{k}", v) for k, v in enumerate(where.stream))]:
        if not stats[key].count and key not in where.missing:
            where.missing[key] = "not exposed by this backend's runtime"
    return {"stats": {k: s for k, s in stats.items() if s.count and k not in where.missing},
            "missing": where.missing, "shift": shift, "method": runner.tap_method}


# -- the comparison ----------------------------------------------------------------------------------
def _sensitivity(stats: dict, names: list[str], depth: int) -> list[dict]:
    """Noise each layer adds to the residual stream (noise/signal after minus before), largest
    first."""
    def nsr(key):
        s = stats.get(key)
        return None if s is None else s.noise_ratio()

    units = [("patch_embed", None, "patch_embed")]
    for b in range(depth):
        units += [(f"blocks.{b}.mixer", f"stream.{2 * b}", f"stream.{2 * b + 1}"),
                  (f"blocks.{b}.mlp", f"stream.{2 * b + 1}", f"stream.{2 * b + 2}")]
    units.append(("head", f"stream.{2 * depth}", "head"))
    out = []
    for name, before, after in units:
        a = nsr(after)
        b = 0.0 if before is None else nsr(before)
        if a is None or b is None or name not in names:
            continue
        out.append({"name": name, "added_noise": float(a - b),
                    "sqnr_db": stats[name].metrics()["sqnr_db"]})
    return sorted(out, key=lambda s: -s["added_noise"])


def _result(stats: dict, order: list[str], depth: int, *, backend: str, precision: str,
            recipe: str, mode: str, n: int, method: str, shift, missing: dict,
            note: str = "") -> PerLayerResult:
    layers = []
    for name in order:
        if name in stats:
            m = stats[name].metrics()
            layers.append(LayerError(name=name, sqnr_db=m["sqnr_db"], max_abs_err=m["max_abs_err"],
                                     cosine=m["cosine"], mean_abs_err=m["mean_abs_err"]))
        elif name not in missing:
            missing[name] = "not exposed by this backend"
    return PerLayerResult(backend=backend, precision=precision, recipe=recipe, mode=mode,
                          n_images=n, layers=layers,
                          sensitivity=_sensitivity(stats, [x.name for x in layers], depth),
                          method=method, tap_logit_shift=shift,
                          missing={k: v for k, v in missing.items() if not k.startswith("stream.")},
                          note=note)


def measure_layers(backend, artifact, model, images: np.ndarray, *, precision: str,
                   recipe: str = "", threads: int = 1, inputs: np.ndarray | None = None
                   ) -> PerLayerResult:
    """Every layer of ``artifact`` (of ``backend``, converted from the torch ``model``) against the
    fp32 ``model`` on ``images``: through the artifact's runtime where this machine runs it, else
    from the backend's static per-layer values (Core ML on Linux), else a UserError. ``inputs``:
    what the artifact takes for those images (uint8 pixels for ``--input image``; default the
    float images themselves)."""
    from lkca_edge.gates import ErrorStats

    if len(images) == 0:
        raise UserError("per-layer comparison needs at least one image")
    if getattr(model, "config", None) is None or not hasattr(model, "blocks"):
        raise UserError("per-layer comparison names the layers of a zoo architecture "
                        "(patch_embed, blocks.i, head); this model is not one")
    c = model.config
    depth = c.depth
    reason = backend.runnable()
    if reason is None:
        from lkca_edge.isolation import run_isolated

        with temporary_directory("layers") as tmp:
            order = write_reference(model, images, Path(tmp))
            dims = (c.depth, c.num_tokens, c.dim)
            feed = images if inputs is None else inputs
            out = run_isolated(_in_runtime, backend.name, str(artifact), np.ascontiguousarray(feed),
                               str(tmp), dims,
                               threads, what=f"the {backend.name} runtime reading the layers of "
                                             f"{final_name(artifact)}")
        return _result(out["stats"], order, depth, backend=backend.name, precision=precision,
                       recipe=recipe, mode="measured", n=len(images), method=out["method"],
                       shift=out["shift"], missing=out["missing"])
    if not hasattr(backend, "static_layer_outputs"):
        raise UserError(f"{backend.name} artifacts cannot run here ({reason}) and the backend has "
                        f"no static per-layer check")
    reference, stream = reference_layers(model, images)
    order = list(reference)
    values, how = backend.static_layer_outputs(artifact, model, images)
    stats = {}
    for name, ref in reference.items():
        if name in values:
            stats[name] = ErrorStats().update(ref, values[name])
    static_stream = [values["patch_embed"]]
    for b in range(depth):
        static_stream.append(static_stream[-1] + values[f"blocks.{b}.mixer"])
        static_stream.append(values[f"blocks.{b}"])
    for k, (ref, val) in enumerate(zip(stream, static_stream)):
        stats[f"stream.{k}"] = ErrorStats().update(ref, val)
    return _result(stats, order, depth, backend=backend.name, precision=precision, recipe=recipe,
                   mode="static", n=len(images), method=how, shift=None, missing={},
                   note=f"STATIC, not a device run: {reason}")

