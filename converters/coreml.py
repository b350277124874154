"""Core ML (.mlpackage) for Apple devices: torch.export -> [PT2E quantize] -> ct.convert ->
[int8 weights] -> save.

Steps: export (ExportedProgram, ATen decompositions) -> [w8a8: PT2E prepare, calibrate on the
real images, convert with folded int8 weights, export again] -> convert to an ML program with the
recipe's deployment target and compute precision -> [int8: per-channel weight quantization] ->
save the package directory.

Conversion runs on any OS; prediction (``MLModel.predict``) runs only on macOS. Elsewhere
``validate_static`` checks the package without running it: its interface, the op counts of its
MIL program, and that every weight stored in it, dequantized, is the source model's weight within
the storage precision. It also estimates the logits off-device by running the torch source with
the package's dequantized weights substituted in (every op's output rounded to fp16 for fp16
programs): an estimate, never a device run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lkca_edge.converters.base import (AppInfo, Backend, ConversionResult, Recipe, Runner,
                                       float_io, inside, model_name, num_outputs,
                                       package_files, register_backend)
from lkca_edge.errors import UserError, first_line, printable
from lkca_edge.fileio import temporary_directory
from lkca_edge.logs import quiet

INPUT_NAME, OUTPUT_NAME = "images", "logits"
CLASS_LABEL = "classLabel"                       # a classifier's predicted label (string)
CLASS_PROBABILITIES = CLASS_LABEL + "_probs"     # its {label: probability} dictionary
PROBABILITIES = "probabilities"                  # the softmax the classifier turns into that
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


@dataclass(frozen=True)
class CoreMLRecipe(Recipe):
    """A Core ML recipe: the deployment target and compute precision are part of the data."""

    deployment_target: str = "iOS16"   # a coremltools.target name
    compute_precision: str = "FLOAT16"  # a coremltools.precision name
    # None | "int8-weights" (coremltools linear_quantize_weights: symmetric per-channel)
    #      | "pt2e-w8a8" (torchao PT2E with XNNPACKQuantizer: static int8 weights and activations)
    quantization: str | None = None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "deployment_target": self.deployment_target,
                "compute_precision": self.compute_precision, "quantization": self.quantization}


# iOS16 / macOS13 is the oldest target with constexpr int8 weights; it reaches more devices than
# iOS18 and these models need nothing newer. w8a8 needs iOS17's quantize/dequantize ops.
# int8 computes in fp16: the Neural Engine runs only fp16, and fp32 compute would keep an int8
# model off it (int8-fp32 is there for CPU/GPU deployments that want fp32 arithmetic).
RECIPES = {
    r.name: r for r in (
        CoreMLRecipe("fp32", "fp32", "float32 weights and compute (CPU/GPU; the Neural Engine "
                     "cannot run fp32)", compute_precision="FLOAT32"),
        CoreMLRecipe("fp16", "fp16", "float16 weights and compute: the Neural Engine's "
                     "native precision", compute_precision="FLOAT16"),
        CoreMLRecipe("int8", "int8", "int8 symmetric per-channel weights (linear_quantize_weights; "
                     "tensors under 2,048 elements stay fp16), fp16 compute for the Neural Engine",
                     compute_precision="FLOAT16", quantization="int8-weights"),
        CoreMLRecipe("int8-fp32", "int8", "int8 symmetric per-channel weights, fp32 compute "
                     "(CPU/GPU only)", compute_precision="FLOAT32", quantization="int8-weights"),
        CoreMLRecipe("w8a8", "int8", "PT2E static int8: XNNPACKQuantizer per-channel weights and "
                     "per-tensor activations calibrated on real images, fp16 compute",
                     calibrated=True, deployment_target="iOS17", compute_precision="FLOAT16",
                     quantization="pt2e-w8a8"),
    )
}


def _with_probabilities_class():
    import torch
    from torch import nn

    class WithProbabilities(nn.Module):
        """(logits, softmax(logits)): the classifier's probabilities beside the logits the
        validation gates compare."""

        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, x):
            logits = self.network(x)
            return logits, torch.softmax(logits, dim=-1)

    return WithProbabilities


def _WithProbabilities(network):  # noqa: N802 - a class built lazily (torch is imported late)
    return _with_probabilities_class()(network)


def _pass_pipeline(ct, quantize_weights: bool, classifier: bool):
    """ct.convert's default passes, plus:

    - ``quantize_weights``: int8 symmetric per-channel weights (the pass behind
      ``linear_quantize_weights``) inside the conversion: quantizing a converted classifier
      afterwards fails in coremltools 9.0 (re-exporting its list of class labels);
    - ``classifier``: one pass that works around coremltools 9.0 losing count of the outputs
      of a classifier with more than one output: the classify op it adds after the passes turns
      one output into two, and the exporter then indexes the (positional) list of output types
      past its end. One more plain tensor type keeps it in range; no output here is an image,
      which is all the exporter reads that list for."""
    from coremltools.converters.mil.input_types import TensorType
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY, register_pass

    name = "lkca_edge::pad_classifier_output_types"
    if classifier and name not in PASS_REGISTRY:
        @register_pass(namespace="lkca_edge")
        class pad_classifier_output_types(AbstractGraphPass):  # noqa: N801 - pass registry name
            def apply(self, prog):
                func = prog.functions["main"]
                if func.output_types:
                    func.output_types = [*func.output_types, TensorType(dtype=np.float32)]

    pipeline = ct.PassPipeline.DEFAULT
    if quantize_weights:
        pipeline.append_pass("compression::linear_quantize_weights")
        pipeline.set_options("compression::linear_quantize_weights",
                             {"config": _int8_weights_config()})
    if classifier:
        pipeline.append_pass(name)
    return pipeline


def _int8_weights_config():
    import coremltools.optimize.coreml as cto

    return cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel"))


def _coremltools():
    """coremltools, imported with its import-time warnings (untested torch, no macOS libs) muted."""
    with quiet():
        import coremltools as ct
    return ct


class CoreMLRunner(Runner):
    """``MLModel.predict`` on macOS; compute units ALL (the app default) unless told otherwise."""

    backend = "coreml"

    def __init__(self, path: Path, compute_units: str = "ALL"):
        ct = _coremltools()
        # coremltools rewrites a package's Manifest.json when it loads it: load a private copy,
        # kept for the runner's life (Core ML reads weights lazily).
        self._copy = temporary_directory("coreml")
        private = Path(self._copy.name) / path.name
        shutil.copytree(path, private, symlinks=True)
        try:
            self.model = ct.models.MLModel(str(private), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as exc:
            raise UserError(f"{path} is not a loadable Core ML package ({first_line(exc)})") from None
        description = self.model.get_spec().description
        self.input_name = description.input[0].name
        self.image_input = description.input[0].type.WhichOneof("Type") == "imageType"
        arrays = [f.name for f in description.output if f.type.WhichOneof("Type") == "multiArrayType"]
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in arrays else (arrays or [description.output[0].name])[0]
        self.compute_units = compute_units

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.image_input:  # (1, H, W, 3) uint8 RGB -> the PIL image Core ML's ImageType takes
            from PIL import Image

            rows = [self.model.predict({self.input_name: Image.fromarray(np.asarray(img, np.uint8), "RGB")})
                    for img in x]
            return np.concatenate([np.asarray(r[self.output_name], np.float32).reshape(1, -1) for r in rows])
        out = self.model.predict({self.input_name: np.ascontiguousarray(x, np.float32)})
        return np.asarray(out[self.output_name], np.float32).reshape(len(x), -1)


@dataclass(frozen=True)
class ImageAffine:
    """How Core ML's ImageType normalises: ``scale * pixel + bias[c]`` (one scale for all
    channels), and the per-channel multipliers folded into the first layer to finish the
    preprocessing's ``(pixel * s - mean[c]) / std[c]``."""

    scale: float
    bias: tuple[float, ...]
    multipliers: tuple[float, ...]
    color_layout: str  # RGB | BGR: the channel order Core ML feeds the network

    @classmethod
    def of(cls, prep) -> "ImageAffine":
        uniform = len(set(prep.std)) == 1
        ref = float(prep.std[0]) if uniform else 1.0  # uniform std: all in scale, nothing folded
        return cls(scale=float(prep.scale / ref), bias=tuple(float(-m / ref) for m in prep.mean),
                   multipliers=tuple(1.0 if uniform else float(ref / s) for s in prep.std),
                   color_layout=prep.channel_order)

    def network_input(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> the float32 (N, 3, H, W) tensor Core ML feeds the network."""
        x = np.asarray(pixels, np.float32)
        if self.color_layout == "BGR":
            x = x[..., ::-1]
        x = x * np.float32(self.scale) + np.asarray(self.bias, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@register_backend
class CoreMLBackend(Backend):
    name = "coreml"
    order = 1
    aliases = ("mlpackage", "coremltools", "apple")
    extension = ".mlpackage"
    install_hint = "coremltools"
    convert_modules = ("torch", "coremltools")
    runtime_modules = ("coremltools",)
    recipes = RECIPES
    default_recipes = {"fp32": "fp32", "fp16": "fp16", "int8": "int8"}
    tool_packages = ("coremltools", "torch", "torchao", "executorch")
    runtime_distributions = {"coremltools": "coremltools"}
    runtime_preload = (("coremltools",),)
    # iOS Vision feeds a CVPixelBuffer to an ImageType input: the default. "tensor" keeps the
    # float MultiArray input for apps that preprocess themselves.
    input_kinds = ("image", "tensor")
    default_input_kind = "image"

    # -- availability ---------------------------------------------------------------------------
    def runnable(self) -> str | None:
        if sys.platform != "darwin":
            return f"Core ML prediction needs macOS (this is {platform.system()}): static checks only"
        reason = super().runnable()
        if reason:
            return reason
        if importlib.util.find_spec("coremltools.libcoremlpython") is None:
            return "this coremltools build has no prediction library (libcoremlpython): static checks only"
        return None

    # -- inputs ---------------------------------------------------------------------------------
    def graph_for(self, model, app: AppInfo | None):
        """Core ML applies the image normalization itself (ImageType scale and bias): the
        network keeps its float input, with a per-channel std folded into its first layer."""
        if app is None or app.input_kind == "tensor":
            return model
        from lkca_edge.image_input import scale_channels

        return scale_channels(model, ImageAffine.of(app.prep()).multipliers)

    # -- convert --------------------------------------------------------------------------------
    def convert(self, model, example, recipe: Recipe, calibration, out_path: Path,
                app: AppInfo | None = None) -> ConversionResult:
        recipe = self._coreml_recipe(recipe)
        affine = ImageAffine.of(app.prep()) if app is not None and app.input_kind == "image" else None
        pixels = example
        if affine is not None:  # the network sees what the ImageType makes of the pixels
            example, calibration = affine.network_input(example), affine.network_input(calibration)
        graph = model
        if recipe.quantization == "pt2e-w8a8":
            graph = self._quantize_pt2e(model, example, calibration)
        if app is not None:
            graph = _WithProbabilities(graph)
        program = self._export(graph, example)
        mlmodel = self._convert(program, example, recipe, app, affine)  # int8 weights inside
        self._describe(mlmodel, model, recipe, app)
        mlmodel.save(str(out_path))
        num_classes = num_outputs(model, example)
        inputs, outputs = float_io(pixels if affine is not None else example, num_classes,
                                   INPUT_NAME, OUTPUT_NAME)
        if app is not None:
            outputs += [{"name": CLASS_LABEL, "shape": [1], "dtype": "string"},
                        {"name": CLASS_PROBABILITIES, "shape": [num_classes], "dtype": "dict"}]
        details = self.inspect(out_path)
        if affine is not None:
            details["image_input"] = {"scale": affine.scale, "bias": list(affine.bias),
                                      "color_layout": affine.color_layout,
                                      "folded_channel_multipliers": list(affine.multipliers)}
        return ConversionResult(inputs, outputs, details)

    # -- steps -----------------------------------------------------------------------------------
    def _coreml_recipe(self, recipe: Recipe) -> CoreMLRecipe:
        if isinstance(recipe, CoreMLRecipe):
            return recipe
        if recipe.name in self.recipes:
            return self.recipes[recipe.name]
        raise UserError(f"{recipe.name!r} is not a Core ML recipe (valid: {', '.join(self.recipes)})")

    @staticmethod
    def _export(model, example: np.ndarray):
        import torch

        return torch.export.export(model, (torch.from_numpy(example),))

    @staticmethod
    def _quantize_pt2e(model, example: np.ndarray, calibration: np.ndarray):
        """Static int8 with XNNPACK's quantizer; int8 weights folded (Core ML needs that)."""
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)

        from lkca_edge.converters import _pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        return _pt2e.quantize(model, example, quantizer, calibration, fold_quantize=True)

    @staticmethod
    def _convert(program, example: np.ndarray, recipe: CoreMLRecipe, app: AppInfo | None = None,
                 affine: ImageAffine | None = None):
        ct = _coremltools()
        if affine is not None:
            inputs = [ct.ImageType(name=INPUT_NAME, shape=example.shape, scale=affine.scale,
                                   bias=list(affine.bias),
                                   color_layout=getattr(ct.colorlayout, affine.color_layout))]
        else:
            inputs = [ct.TensorType(name=INPUT_NAME, shape=example.shape, dtype=np.float32)]
        outputs = [ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)]
        kwargs = {}
        if app is not None:
            # A classifier: the softmax output becomes classLabel and its {label: probability}
            # dictionary, which Vision returns as VNClassificationObservations; the logits stay
            # an output (the one the validation gates compare).
            outputs.append(ct.TensorType(name=PROBABILITIES, dtype=np.float32))
            kwargs["classifier_config"] = ct.ClassifierConfig(
                list(app.labels), predicted_feature_name=CLASS_LABEL,
                predicted_probabilities_output=PROBABILITIES)
        kwargs["pass_pipeline"] = _pass_pipeline(ct, recipe.quantization == "int8-weights", app is not None)
        return ct.convert(program.run_decompositions({}), convert_to="mlprogram", inputs=inputs,
                          outputs=outputs,
                          minimum_deployment_target=getattr(ct.target, recipe.deployment_target),
                          compute_precision=getattr(ct.precision, recipe.compute_precision),
                          **kwargs)

    @staticmethod
    def _describe(mlmodel, model, recipe: CoreMLRecipe, app: AppInfo | None = None) -> None:
        mlmodel.short_description = (f"{model_name(model)} logits, {recipe.name} recipe "
                                     f"({recipe.description})")
        image = app is not None and app.input_kind == "image"
        mlmodel.input_description[INPUT_NAME] = (
            "RGB image at the model's size; scale and bias normalize it inside the model" if image
            else "float32 (1, C, H, W) image, normalized as the preprocessing metadata says")
        mlmodel.output_description[OUTPUT_NAME] = "float32 (1, classes) logits"
        meta = {"lkca_edge.model": model_name(model), "lkca_edge.recipe": recipe.name}
        if app is not None:
            mlmodel.short_description = app.description
            mlmodel.author, mlmodel.version = app.author, app.version
            mlmodel.output_description[CLASS_LABEL] = "the most probable class"
            mlmodel.output_description[CLASS_PROBABILITIES] = "softmax probability of every class"
            meta.update({"labels": json.dumps(list(app.labels)),
                         "preprocessing": json.dumps(app.preprocessing),
                         "input_kind": app.input_kind})
            if image:  # Xcode's model preview then offers to drop an image on it
                meta["com.apple.coreml.model.preview.type"] = "imageClassifier"
        mlmodel.user_defined_metadata.update(meta)

    # -- run -------------------------------------------------------------------------------------
    def load(self, path, threads: int = 1, compute_units: str | None = None) -> Runner:
        """A predicting runner (macOS only). Core ML picks its own threads; ``threads`` is unused."""
        self.require_runnable()
        path = Path(path)
        self.check_artifact_file(path)
        self.artifact_files(path)  # no symlink, no path leaving the package
        units = (compute_units or "ALL").upper()
        if units not in COMPUTE_UNITS:
            raise UserError(f"unknown Core ML compute units {compute_units!r} (valid: {', '.join(COMPUTE_UNITS)})")
        return CoreMLRunner(path, units)

    # -- integrity -------------------------------------------------------------------------------
    def artifact_files(self, path) -> list[Path]:
        """Every file of the package (Core ML may open any of them). Refused: a symlink, a
        member that is no regular file, and a Manifest.json item whose path leaves the package."""
        from lkca_edge.safeio import read_json

        path = Path(path)
        self.check_artifact_file(path)
        files = package_files(path, "Core ML package")
        manifest = path / "Manifest.json"
        if manifest not in files:
            raise UserError(f"{path} has no Manifest.json: not a Core ML package")
        doc = read_json(manifest, "Core ML package manifest")
        entries = doc.get("itemInfoEntries") if isinstance(doc, dict) else None
        if not isinstance(entries, dict) or not entries:
            raise UserError(f"{manifest} lists no items (itemInfoEntries): not a Core ML package")
        for key, entry in entries.items():
            rel = entry.get("path") if isinstance(entry, dict) else None
            target = inside(path / "Data", rel) if isinstance(rel, str) else None
            if target is None:
                raise UserError(f"{manifest}: item {printable(key, 60)} points at "
                                f"{printable(repr(rel), 120)}, outside the package; refused")
            if not target.exists():
                raise UserError(f"{manifest}: item {printable(key, 60)} names "
                                f"{printable(rel, 120)}, which the package does not hold")
        if doc.get("rootModelIdentifier") not in entries:
            raise UserError(f"{manifest}: rootModelIdentifier names no item of the package")
        return files

    def inspect(self, path) -> dict:
        """Interface, op counts, stored weight bytes and precisions, read from the package's spec."""
        with self._opened(Path(path)) as (spec, mlmodel):
            weights_dir = Path(mlmodel.weights_dir) if mlmodel.weights_dir else None
            weight_bytes = sum(f.stat().st_size for f in weights_dir.rglob("*") if f.is_file()) \
                if weights_dir and weights_dir.is_dir() else 0
        function = _main_function(spec)
        ops = function.block_specializations[function.opset].operations
        counts: dict[str, int] = {}
        for op in ops:
            counts[op.type] = counts.get(op.type, 0) + 1
        preprocessing = _image_preprocessing(ops, spec)
        # the ImageType's own scale and bias are not weights of the network
        stored = _stored_weight_summary(ops, exclude=set((preprocessing or {}).pop("consts", [])))
        weights_dir = Path(mlmodel.weights_dir) if mlmodel.weights_dir else None
        weight_bytes = sum(f.stat().st_size for f in weights_dir.rglob("*") if f.is_file()) \
            if weights_dir and weights_dir.is_dir() else 0
        return {
            "spec_version": int(spec.specificationVersion),
            "minimum_deployment_target": _target_name(spec.specificationVersion),
            "opset": function.opset,
            "compute_precision": _compute_precision(ops),
            "inputs": [_feature(f) for f in spec.description.input],
            "outputs": [_feature(f) for f in spec.description.output],
            "classifier": _classifier(spec, ops),
            "image_preprocessing": preprocessing,
            "user_defined_metadata": dict(spec.description.metadata.userDefined),
            "op_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "compute_ops": sum(n for t, n in counts.items() if t != "const" and not t.startswith("constexpr")),
            "weight_bytes": int(weight_bytes),
            "stored_weights": stored,  # weight tensors by storage dtype (quantized: data dtype)
        }

    # -- static validation (no prediction) -------------------------------------------------------
    def validate_static(self, path, model, images: np.ndarray | None = None,
                        labels: np.ndarray | None = None) -> dict:
        """Check a package against its torch source without running it.

        Structure: one float32 input of the model's image shape, one float32 output of
        (1, classes), a non-empty MIL program. Weights: every tensor the program stores is read
        and dequantized and compared with the source tensor it came from (matched by the name
        torch.export gave it, else by value among same-shape tensors): fp32 within 1e-6
        relative, fp16 within 1e-3 relative, int8 within one quantization step of its channel.
        Every Linear weight (and frozen token-mixing matrix) of the source must be found.

        Estimate: the torch source with the package's dequantized weights substituted (and every
        op's output rounded to fp16 when the program computes in fp16) on ``images``, else on the
        calibration images the package was just converted with (the pipeline's call); accuracy
        when ``labels`` are given. It does not model Core ML's kernels or w8a8 activation
        quantization: an estimate, not a device run.
        """
        from lkca_edge.converters import _coreml_estimate, _coreml_static

        path = Path(path)
        prep = getattr(model, "preprocessing", None)
        model = model.export_module() if hasattr(model, "export_module") else model
        info = self.inspect(path)
        affine = None
        if info["inputs"] and info["inputs"][0].get("type") == "image":
            if prep is None:
                raise UserError("checking an image-input Core ML package needs the source "
                                "model's preprocessing")
            from lkca_edge.image_input import scale_channels

            affine = ImageAffine.of(prep)
            # The package's network is the source with the std folded into its first layer,
            # fed what the ImageType makes of the pixels.
            model = scale_channels(model, affine.multipliers)
            if images is not None:  # the package's input (pixels); normalised arrays also do
                pixels = images if images.dtype == np.uint8 else prep.to_pixels(images)
                images = affine.network_input(pixels)
        classifier_labels = None
        if info.get("classifier") is not None and prep is not None:
            classifier_labels = (list(prep.labels) if len(prep.labels) == len(info["classifier"].get("labels") or [])
                                 else info["classifier"].get("labels"))
        failures = _coreml_static.check_interface(info, model, images, affine, classifier_labels)
        program = self._read_program(path)
        stored = _coreml_static.stored_tensors(program)
        report = _coreml_static.match_weights(stored, model)
        failures += report["failures"]
        result = {"passed": not failures, "failures": failures, "inputs": info["inputs"],
                  "outputs": info["outputs"], "op_counts": info["op_counts"],
                  "weights": {k: v for k, v in report.items() if k not in ("failures", "values")}}
        source = "given images" if labels is None else "given labelled test images"
        if images is not None and not failures:
            result["estimate"] = _coreml_estimate.estimate(
                model, report["values"], info["compute_precision"], images, labels,
                "quantize" in info["op_counts"])
            result["estimate"]["images"] = f"{len(images)} {source}"
        result["note"] = _coreml_static.static_note(result, info)
        return result

    def static_layer_outputs(self, path, model, images: np.ndarray) -> tuple[dict, str]:
        """Per-layer values without running the package: the torch source with every weight the
        package stores, dequantized, substituted (and every op's output rounded to fp16 for fp16
        programs). It shows where the stored weights move the function; it does not model Core
        ML's kernels or w8a8 activation quantization."""
        from lkca_edge.converters import _coreml_estimate, _coreml_static

        path = Path(path)
        prep = getattr(model, "preprocessing", None)
        net = model.export_module() if hasattr(model, "export_module") else model
        info = self.inspect(path)
        if info["inputs"] and info["inputs"][0].get("type") == "image" and prep is not None:
            from lkca_edge.image_input import scale_channels

            # as validate_static: the std folded into the first layer, fed the ImageType's input
            affine = ImageAffine.of(prep)
            net = scale_channels(net, affine.multipliers)
            pixels = images if images.dtype == np.uint8 else prep.to_pixels(images)
            images = affine.network_input(pixels)
        report = _coreml_static.match_weights(_coreml_static.stored_tensors(self._read_program(path)), net)
        if report["failures"]:
            raise UserError(f"{path}: the stored weights do not match the source "
                            f"({report['failures'][0]}); no per-layer estimate")
        values = _coreml_estimate.layer_values(net, report["values"], info["compute_precision"], images)
        how = ("static: the torch source with the package's stored weights (dequantized)"
               + (", every op output rounded to fp16" if info["compute_precision"] == "fp16" else "")
               + ("; w8a8 activation quantization not modelled" if "quantize" in info["op_counts"] else ""))
        return values, how

    # -- reading packages ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _opened(self, path: Path):
        """(spec, MLModel) of a private copy of the package, removed afterwards: coremltools
        rewrites a package's Manifest.json when it opens it, and reading must change nothing."""
        self.artifact_files(path)  # no symlink, no path leaving the package, before any copy
        ct = _coremltools()
        with temporary_directory("coreml") as tmp:
            private = Path(tmp) / path.name
            shutil.copytree(path, private, symlinks=True)
            try:
                with quiet():
                    mlmodel = ct.models.MLModel(str(private), skip_model_load=True)
                    spec = mlmodel.get_spec()
            except Exception as exc:
                raise UserError(f"{path} is not a readable Core ML package ({first_line(exc)})") from None
            if spec.WhichOneof("Type") != "mlProgram":
                raise UserError(f"{path} is a Core ML {spec.WhichOneof('Type')} model, not an ML program")
            yield spec, mlmodel

    def _read_program(self, path: Path):
        """The package's MIL program with its weights read from the blob file (pymil)."""
        from coremltools.converters.mil.frontend.milproto.load import load as load_mil

        with self._opened(path) as (spec, mlmodel):
            try:
                with quiet():
                    return load_mil(spec, spec.specificationVersion, mlmodel.weights_dir)
            except Exception as exc:
                raise UserError(f"cannot read the weights of {path} ({first_line(exc)})") from None


# -- spec helpers --------------------------------------------------------------------------------
def _main_function(spec):
    functions = spec.mlProgram.functions
    if "main" not in functions:
        raise UserError(f"the Core ML program has no main function (has: {', '.join(functions)})")
    return functions["main"]


_PROTO_DTYPES = {"FLOAT32": "fp32", "FLOAT16": "fp16", "FLOAT64": "fp64", "INT8": "int8",
                 "UINT8": "uint8", "INT16": "int16", "UINT16": "uint16", "INT32": "int32",
                 "INT4": "int4", "UINT4": "uint4", "BOOL": "bool", "STRING": "string"}


def _dtype_name(code: int) -> str:
    from coremltools.proto import MIL_pb2

    name = MIL_pb2.DataType.Name(code)
    return _PROTO_DTYPES.get(name, name.lower())


def _const_type(op) -> tuple[str | None, list[int]]:
    vt = op.outputs[0].type
    if vt.WhichOneof("type") != "tensorType":
        return None, []
    t = vt.tensorType
    return _dtype_name(t.dataType), [int(d.constant.size) for d in t.dimensions]


_PARAM_DTYPES = ("int32", "int64", "bool", "string")  # shapes, axes, flags: not weights


def _stored_weight_summary(ops, exclude=frozenset()) -> dict[str, dict]:
    """Weight tensors by storage dtype: consts, and each constexpr (dequantized at load) counted
    once under its quantized data's dtype, its data/scale/offset consts not counted again."""
    consts = {op.outputs[0].name: _const_type(op) for op in ops if op.type == "const"}
    parts = {arg.name for op in ops if op.type.startswith("constexpr")
             for arg_list in op.inputs.values() for arg in arg_list.arguments if arg.name}
    summary: dict[str, dict] = {}

    def add(dtype, shape):
        if dtype is None or dtype in _PARAM_DTYPES or not shape:
            return
        row = summary.setdefault(dtype, {"tensors": 0, "elements": 0})
        row["tensors"] += 1
        row["elements"] += int(np.prod(shape))

    for op in ops:
        if op.type == "const" and op.outputs[0].name not in parts | set(exclude):
            add(*consts[op.outputs[0].name])
        elif op.type.startswith("constexpr"):
            shape = _const_type(op)[1]
            dtype = None
            for key in ("quantized_data", "data", "indices", "source_val"):
                if key in op.attributes:  # iOS16: the data is an attribute of the op
                    dtype = _dtype_name(op.attributes[key].type.tensorType.dataType)
                elif key in op.inputs:    # iOS18: an input, named const or inline value
                    arg = op.inputs[key].arguments[0]
                    dtype = (consts.get(arg.name, (None, []))[0] if arg.name else
                             _dtype_name(arg.value.type.tensorType.dataType))
                if dtype:
                    break
            add(dtype or op.type, shape)
    return dict(sorted(summary.items(), key=lambda kv: -kv[1]["elements"]))


def _compute_precision(ops) -> str:
    """fp16 when the program's linear/matmul/conv outputs are fp16, else fp32."""
    for op in ops:
        if op.type in ("linear", "matmul", "conv"):
            return _dtype_name(op.outputs[0].type.tensorType.dataType)
    return "unknown"


def _feature(f) -> dict:
    from coremltools.proto import FeatureTypes_pb2

    kind = f.type.WhichOneof("Type")
    if kind == "imageType":
        image = f.type.imageType
        color = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
        return {"name": f.name, "type": "image", "width": int(image.width),
                "height": int(image.height), "color": color}
    if kind != "multiArrayType":
        return {"name": f.name, "type": kind}
    array = f.type.multiArrayType
    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()
    return {"name": f.name, "shape": [int(s) for s in array.shape], "dtype": dtype}


def _classifier(spec, ops) -> dict | None:
    """{predicted_feature, probabilities, labels} of a classifier package (labels read from the
    classify op's classes constant), or None."""
    d = spec.description
    if not d.predictedFeatureName:
        return None
    consts = {op.outputs[0].name: op for op in ops if op.type == "const"}
    labels = None
    for op in ops:
        if op.type == "classify" and "classes" in op.inputs:
            arg = op.inputs["classes"].arguments[0]
            value = consts[arg.name].attributes["val"] if arg.name in consts else arg.value
            labels = _list_value(value)
    return {"predicted_feature": d.predictedFeatureName,
            "probabilities": d.predictedProbabilitiesName, "labels": labels}


def _list_value(value) -> list | None:
    """A MIL list constant (the classify op's classes) as Python strings/ints."""
    imm = value.immediateValue
    if imm.WhichOneof("value") == "list":
        out = []
        for v in imm.list.values:
            t = v.immediateValue.tensor
            out += list(t.strings.values) or [int(i) for i in t.longInts.values] or list(t.ints.values)
        return [x.decode() if isinstance(x, bytes) else x for x in out]
    if imm.WhichOneof("value") == "tensor":
        t = imm.tensor
        return [x.decode() if isinstance(x, bytes) else x for x in t.strings.values] or None
    return None


def _image_preprocessing(ops, spec) -> dict | None:
    """{scale, bias} of an ImageType input: the ``mul`` by the scale and ``add`` of the bias
    ct.convert puts right after the input (through casts), read from their constants."""
    d = spec.description
    if not d.input or d.input[0].type.WhichOneof("Type") != "imageType":
        return None
    consts = {op.outputs[0].name: op for op in ops if op.type == "const"}

    def const_value(op, key):
        arg = op.inputs[key].arguments[0]
        value = consts[arg.name].attributes["val"] if arg.name in consts else arg.value
        t = value.immediateValue.tensor
        vals = list(t.floats.values) or [float(np.frombuffer(bytes(t.bytes.values), np.float16)[i])
                                         for i in range(len(t.bytes.values) // 2)]
        return vals

    def consumer(name, op_type):
        for op in ops:
            if op.type == op_type and "x" in op.inputs and op.inputs["x"].arguments[0].name == name:
                return op
        return None

    name = d.input[0].name
    cast = consumer(name, "cast")
    if cast is not None:
        name = cast.outputs[0].name
    mul = consumer(name, "mul")
    add = consumer(mul.outputs[0].name, "add") if mul is not None else None
    if mul is None or add is None:
        return None
    scale, bias = const_value(mul, "y"), const_value(add, "y")
    if len(scale) != 1 or not bias:
        return None
    return {"scale": float(scale[0]), "bias": [float(b) for b in bias],
            "consts": [op.inputs["y"].arguments[0].name for op in (mul, add)]}


def _target_name(spec_version: int) -> str:
    ct = _coremltools()
    try:
        return ct.target(int(spec_version)).name
    except ValueError:
        return f"specification {spec_version}"



__all__ = ["CoreMLBackend", "CoreMLRecipe", "CoreMLRunner", "RECIPES"]
