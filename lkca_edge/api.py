"""The Python API: what the CLI does, as functions with typed results.

    import lkca_edge
    result = lkca_edge.export("lkca-1m", "tflite", "int8", checkpoint="mine.pt", out="out")
    result.artifact, result.manifest, result.validation
    lkca_edge.validate(result.artifact)                  # on its validation pack, no torch needed
    lkca_edge.profile(result.artifact, device="raspberry-pi-5").latency_ms["median"]
    lkca_edge.bench(models=["lkca-1m"], backends=["onnx"], out="runs/mine")

Every error a user can act on is a ``lkca_edge.UserError`` with the CLI's one-line message. The
functions run their runtimes in child processes that import only this package, so a script that
calls them at module level, with no ``if __name__ == "__main__":`` guard, works.
"""

from __future__ import annotations

from pathlib import Path

from lkca_edge.errors import UserError


def export(model_or_name, backend: str, precision: str | None = "fp32", *,
           checkpoint: str | Path | None = None, recipe: str | None = None,
           calibration: str | None = None, out: str | Path, form: str | None = None,
           example_input=None, preprocessing=None, name: str | None = None,
           validation_limit: int | None = None, calibration_size: int = 128,
           enforce_gate: bool = True, input: str | None = None, dynamic_batch: bool = False,
           ort: bool = False, fallback: bool = False):
    """Convert a model for ``backend``, validate it on real images and write the artifact, its
    validation pack and manifest into ``out``; returns an ``ExportResult`` (``.artifact``,
    ``.manifest``, ``.validation``).

    ``model_or_name``: a zoo name (with ``checkpoint`` for your weights; ``None`` when the
    checkpoint says what it is), a model from ``lkca_edge.create_model``, or any
    ``torch.nn.Module`` taking (N, C, H, W) float32 images: then give ``example_input`` (one
    batch-1 array or tensor) and ``preprocessing`` (a ``Preprocessing`` with its label names),
    and ``calibration`` (the data it is validated on; its labels are matched by name). LKCA
    rewrites apply only where they fit. ``recipe`` picks any of the backend's recipes
    (``precision=None`` then takes the recipe's). ``input="image"``: the artifact takes uint8
    (1, H, W, 3) RGB pixels and normalizes inside (Core ML's default); ``dynamic_batch`` and
    ``ort`` (the ORT Mobile format) are for onnx.
    ``fallback``: an int8 export whose gate fails keeps its layers that add the most error in
    float until it passes (the manifest lists them).
    """
    from lkca_edge.pipelines.export import ExportRequest, export_model

    if recipe is not None and precision == "fp32":
        precision = None  # the recipe decides, unless the caller set another precision
    req = ExportRequest(model=model_or_name if isinstance(model_or_name, str) else None,
                        backend=backend, precision=precision, recipe=recipe,
                        checkpoint=str(checkpoint) if checkpoint is not None else None,
                        form=form, calibration=calibration, calibration_size=calibration_size,
                        out=str(out), enforce_gate=enforce_gate,
                        validation_limit=validation_limit, name=name, input=input,
                        dynamic_batch=dynamic_batch, ort=ort, fallback=fallback)
    if model_or_name is None or isinstance(model_or_name, str):
        return export_model(req)
    return export_model(req, model=_prepared_module(model_or_name, example_input, preprocessing,
                                                    name))


def _prepared_module(module, example_input, preprocessing, name):
    """A user's torch module with what the pipeline reads (preprocessing, name, trained)."""
    import copy

    import numpy as np

    if hasattr(module, "config") and hasattr(module, "preprocessing"):
        return module  # a model of this toolkit's zoo
    try:
        import torch
    except ImportError:
        raise UserError("exporting a torch module needs torch (pip install 'lkca-edge[convert]')") from None
    if not isinstance(module, torch.nn.Module):
        raise UserError(f"export takes a zoo name or a torch.nn.Module, got {type(module).__name__}")
    if preprocessing is None:
        raise UserError("a torch module needs preprocessing=Preprocessing(...) (image size, "
                        "mean, std and label names travel with the artifact)")
    example = example_input.detach().cpu().numpy() if hasattr(example_input, "detach") \
        else np.asarray(example_input) if example_input is not None else None
    size = preprocessing.image_size
    if example is None or example.ndim != 4 or tuple(example.shape[1:]) != (3, size, size):
        raise UserError(f"a torch module needs example_input of shape (1, 3, {size}, {size}) "
                        f"(the preprocessing's image size), got "
                        f"{None if example is None else list(example.shape)}")
    model = copy.deepcopy(module).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(example[:1], np.float32)))
    if out.ndim != 2:
        raise UserError(f"the module must return (N, classes) logits, it returned {list(out.shape)}")
    model.num_outputs = int(out.shape[-1])
    model.preprocessing = preprocessing
    model.zoo_name = name or type(module).__name__
    model.trained = True
    model.data_record = None
    model.checkpoint_info = {}
    return model


def validate(artifact: str | Path, dataset: str | None = None, limit: int | None = None, *,
             threads: int = 1, verify: bool = True, remote: str | None = None,
             remote_command: str | None = None):
    """Validate an exported artifact through its own runtime: on its validation pack (no torch),
    or on ``dataset`` (labels matched by name); ``remote="ssh://USER@HOST"`` on a board.
    Returns a ``ValidationResult``."""
    from lkca_edge.pipelines.validate import validate_artifact

    return validate_artifact(artifact, dataset=dataset, limit=limit, threads=threads, verify=verify,
                             remote=remote, remote_command=remote_command)


def per_layer(artifact: str | Path, dataset: str | None = None, limit: int | None = None, *,
              threads: int = 1, verify: bool = True):
    """Validate an artifact and compare every layer with the fp32 source's (needs torch);
    returns (``ValidationResult``, ``PerLayerResult``: ``.layers`` with SQNR dB, max abs error
    and cosine per source-model layer, ``.worst``, ``.to_dict()``)."""
    from lkca_edge.pipelines.validate import validate_per_layer

    return validate_per_layer(artifact, dataset=dataset, limit=limit, threads=threads,
                              verify=verify)


def profile(artifact: str | Path, device: str = "host", threads: int | None = None,
            runs: int = 100, *, warmup: int = 10, dataset: str | None = None, op_runs: int = 10,
            timeout: float | None = 600.0, profiles_dir=None, verify: bool = True,
            remote: str | None = None, remote_command: str | None = None):
    """Latency and memory of an artifact for a device profile, measured here or on the device
    (``remote="ssh://USER@HOST"`` / ``"adb://SERIAL"``); returns a ``ProfileResult``
    (``.latency_ms["median"]``, ``.memory``, ``.verdict``, ...)."""
    from lkca_edge.pipelines.profile import profile_artifact

    return profile_artifact(artifact, device=device, threads=threads, runs=runs, warmup=warmup,
                            verify=verify, profiles_dir=profiles_dir, op_runs=op_runs,
                            timeout=timeout, dataset=dataset, remote=remote,
                            remote_command=remote_command)


def bench(models=None, backends=None, precisions=None, *, out: str | Path | None = None,
          device: str = "host", checkpoint: str | Path | None = None,
          dataset: str | None = None, runs: int = 100, warmup: int = 10, op_runs: int = 10,
          threads: int | None = None, validation_limit: int | None = None,
          record: bool = True, db: str | Path | None = None, progress: bool = False,
          remote: str | None = None, remote_command: str | None = None):
    """The main job for these models x backends x precisions; returns a ``BenchOutcome``
    (``.results``, ``.out_dir``, ``.files``)."""
    from lkca_edge.bench import BenchConfig, run_bench
    from lkca_edge.bench.config import DEFAULT_MODELS, DEFAULT_PRECISIONS, default_backends

    cfg = BenchConfig(
        models=list(models) if models else ([] if checkpoint else list(DEFAULT_MODELS)),
        backends=list(backends) if backends else default_backends(),
        precisions=list(precisions) if precisions else list(DEFAULT_PRECISIONS),
        device=device, runs=runs, warmup=warmup, op_runs=op_runs, threads=threads,
        out=str(out) if out is not None else None, db=str(db) if db is not None else None,
        record=record, checkpoint=str(checkpoint) if checkpoint is not None else None,
        dataset=dataset, validation_limit=validation_limit, progress=progress, remote=remote,
        remote_command=remote_command)
    return run_bench(cfg)
