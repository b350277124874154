"""LiteRT / TFLite (.tflite): litert-torch conversion, PT2E or ai-edge-quantizer int8.

Steps: export (torch.export) -> [quantize: PT2E prepare -> calibrate -> convert] -> convert
(litert_torch) -> serialize -> [ai-edge-quantizer on the fp32 .tflite] -> read the real I/O back.

Static int8 models take and return int8 tensors; the runner quantizes inputs and dequantizes
outputs with each tensor's own (scale, zero point), which the manifest records.

Layout trap (measured): with the ``T @ V`` layout (form "frozen", constant on the left of a
batch-matmul) PT2E dynamic fails to convert and ai-edge-quantizer ``static_wi8_ai8`` converts and
runs but is silently wrong (10-13 % on digits); the Linear layout ("frozen-linear", and "fused",
the export default) is right. The export gate refuses the wrong one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from lkca_edge.converters._tflite_ops import TFLITE_IDENTIFIER
from lkca_edge.converters.base import (AppInfo, Backend, ConversionResult, Recipe, Runner,
                                       io_spec, read_artifact, register_backend)
from lkca_edge.errors import BackendUnavailable, UserError, first_line
from lkca_edge.fileio import temporary_directory
from lkca_edge.logs import debug_enabled, quiet


RECIPES = {
    r.name: r for r in (
        Recipe("fp32", "fp32", "float32 graph, litert_torch.convert",
               options=(("tool", "litert-torch"),)),
        Recipe("int8", "int8", "static int8 PT2E: s8 per-channel weights, s8 activations, "
               "int8 input/output tensors, calibrated on real images", calibrated=True,
               options=(("tool", "pt2e"), ("mode", "static"))),
        Recipe("int8-dynamic", "int8", "dynamic int8 PT2E: s8 per-channel weights, activations "
               "quantized at run time, float I/O", options=(("tool", "pt2e"), ("mode", "dynamic"))),
        Recipe("int8-mixed", "int8", "static int8 PT2E as 'int8', with the layers that add the "
               "most error (measured per layer on the int8 artifact) kept in float until the "
               "mixed target is met", calibrated=True,
               options=(("tool", "pt2e"), ("mode", "static"), ("mixed", True))),
        Recipe("aeq-dynamic", "int8", "ai-edge-quantizer dynamic_wi8_afp32 on the fp32 .tflite",
               options=(("tool", "ai-edge-quantizer"), ("aeq_recipe", "dynamic_wi8_afp32"))),
        Recipe("aeq-weight-only", "int8", "ai-edge-quantizer weight_only_wi8_afp32 on the fp32 "
               ".tflite (int8 storage, float compute)",
               options=(("tool", "ai-edge-quantizer"), ("aeq_recipe", "weight_only_wi8_afp32"))),
        Recipe("aeq-static", "int8", "ai-edge-quantizer static_wi8_ai8 on the fp32 .tflite, "
               "calibrated on real images", calibrated=True,
               options=(("tool", "ai-edge-quantizer"), ("aeq_recipe", "static_wi8_ai8"))),
    )
}


# -- runtime (no torch) ----------------------------------------------------------------------------
def _interpreter_class():
    """ai_edge_litert's Interpreter; tflite_runtime's only where ai_edge_litert is absent."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


def _open_interpreter(path: Path, threads: int, delegates: bool = True, fuse: bool = True):
    """An interpreter of ``path``; ``delegates=False``: builtin kernels only (no XNNPACK);
    ``fuse=False``: every delegated op its own DELEGATE node (to count what XNNPACK takes)."""
    kwargs = {}
    if not fuse:
        kwargs["experimental_disable_delegate_node_fusion"] = True
    if not delegates:
        from ai_edge_litert.interpreter import OpResolverType

        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with quiet():  # native INFO lines go to fd 2
            return _interpreter_class()(model_path=str(path), num_threads=int(threads), **kwargs)
    except Exception as exc:
        raise UserError(f"{path} is not a loadable TFLite model ({first_line(exc)})") from None


def _quantization(detail: dict) -> tuple[float, int] | None:
    """A tensor's (scale, zero_point), or None for a float tensor."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zero_point)) if scale else None


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    q = _quantization(detail)
    if q is None:
        return y.astype(np.float32, copy=True)
    return ((y.astype(np.float32) - q[1]) * q[0]).astype(np.float32)


def _quantize(x: np.ndarray, q: tuple[float, int], dtype) -> np.ndarray:
    """Float input to a quantized input tensor (round half to even, clipped to the type)."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / np.float32(q[0])) + q[1], info.min, info.max).astype(dtype)


def with_extra_outputs(content: bytes, tensors: list[int]) -> bytes:
    """The .tflite ``content`` with ``tensors`` (indices in the main subgraph) appended to that
    subgraph's outputs, so the runtime writes them out (delegates included)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(content, 0))
    graph = model.subgraphs[0]
    present = [int(t) for t in graph.outputs]
    graph.outputs = present + [t for t in dict.fromkeys(tensors) if t not in present]
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _io_specs(details: list[dict]) -> list[dict]:
    return [io_spec(d["name"], d["shape"], np.dtype(d["dtype"]).name, _quantization(d))
            for d in details]


class LiteRTRunner(Runner):
    backend = "tflite"

    def __init__(self, path: Path, threads: int):
        self._path, self._threads = Path(path), threads
        self.interpreter = _open_interpreter(path, threads)
        try:
            with quiet():  # XNNPACK is applied here and logs "Created ... delegate" to fd 2
                self.interpreter.allocate_tensors()
        except Exception as exc:
            hint = f"; {_LAYOUT_HINT}" if "batch_matmul" in str(exc) else ""
            raise UserError(f"{path}: the TFLite runtime cannot prepare this model "
                            f"({first_line(exc)[:200]}){hint}") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; "
                            f"expected one image input and one logits output")
        self._in, self._out = inputs[0], outputs[0]
        self._in_shape = tuple(int(s) for s in self._in["shape"])
        self._in_q = _quantization(self._in)
        self._in_dtype = np.dtype(self._in["dtype"])
        if self._in_q is not None:  # per-call quantization into one preallocated buffer
            info = np.iinfo(self._in_dtype)
            self._in_scale = np.float32(self._in_q[0])
            self._in_zero, self._in_bounds = np.float32(self._in_q[1]), (info.min, info.max)
            self._in_buffer = np.empty(self._in_shape, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, self._in_dtype if self._in_dtype == np.uint8 else np.float32)
        if x.shape != self._in_shape:
            raise UserError(f"input has shape {tuple(x.shape)}; this model takes {self._in_shape}")
        if self._in_q is None:
            self.interpreter.set_tensor(self._in["index"], np.ascontiguousarray(x, self._in_dtype))
        else:  # the same rounding as _quantize (round half to even), without temporaries
            buf = self._in_buffer
            np.divide(x, self._in_scale, out=buf)
            np.rint(buf, out=buf)
            buf += self._in_zero
            np.clip(buf, *self._in_bounds, out=buf)
            self.interpreter.set_tensor(self._in["index"], buf.astype(self._in_dtype))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self._out["index"]), self._out)

    # -- intermediate values -----------------------------------------------------------------------
    tap_method = ("the LiteRT interpreter (XNNPACK delegate applied, as deployed) on a copy of the "
                  "artifact whose subgraph outputs also list the layers' tensors")

    def tensor_graph(self):
        """The main subgraph's ops in execution order, read by an interpreter without delegates
        (the XNNPACK delegate replaces ops by partitions; their tensors are the same)."""
        from lkca_edge.converters._graph import GraphOp, TensorGraph

        interp = _open_interpreter(self._path, 1, delegates=False)
        ops = []
        for op in interp._get_ops_details():  # private but stable since TF 2.5
            ops.append(GraphOp(type=op["op_name"],
                               inputs=tuple(str(int(t)) for t in op["inputs"] if int(t) >= 0),
                               outputs=tuple(str(int(t)) for t in op["outputs"] if int(t) >= 0),
                               name=f"{op['op_name']}#{op['index']}", is_add=op["op_name"] == "ADD"))
        numel = {str(t["index"]): int(np.prod(t["shape"])) for t in interp.get_tensor_details()
                 if len(t["shape"])}
        return TensorGraph(ops=ops, inputs=tuple(str(d["index"]) for d in interp.get_input_details()),
                           outputs=tuple(str(d["index"]) for d in interp.get_output_details()),
                           numel=numel)

    def run_with_taps(self, images: np.ndarray, values: list[str]):
        """Logits and the dequantized float32 values of tensors ``values`` (tensor indices) for
        every image, from a copy of the model with those tensors appended to its outputs."""
        key = tuple(values)
        if getattr(self, "_tapped", (None,))[0] != key:  # one tapped model per set of values
            content = with_extra_outputs(read_artifact(self._path), [int(v) for v in values])
            with temporary_directory("taps") as tmp:
                path = Path(tmp) / "taps.tflite"
                path.write_bytes(content)
                interp = _open_interpreter(path, self._threads)
                try:
                    with quiet():
                        interp.allocate_tensors()
                except Exception as exc:
                    raise UserError(f"{self._path}: the copy with its layers as outputs does not "
                                    f"prepare ({first_line(exc)[:200]})") from None
            self._tapped = (key, interp)
        interp = self._tapped[1]
        outputs = {str(d["index"]): d for d in interp.get_output_details()}
        logits, taps = [], {v: [] for v in values}
        for i in range(len(images)):
            x = np.asarray(images[i:i + 1], np.float32)
            if self._in_q is None:
                interp.set_tensor(self._in["index"], np.ascontiguousarray(x, self._in_dtype))
            else:
                interp.set_tensor(self._in["index"], _quantize(x, self._in_q, self._in_dtype))
            interp.invoke()
            logits.append(_dequantize(interp.get_tensor(self._out["index"]), self._out))
            for v in values:
                detail = outputs[v]
                taps[v].append(_dequantize(interp.get_tensor(detail["index"]), detail).reshape(1, -1))
        return np.concatenate(logits), {v: np.concatenate(a) for v, a in taps.items()}

    def planned_memory_bytes(self) -> int | None:
        # The Python interpreter does not expose the arena size (no arena accessor in
        # ai_edge_litert 2.3 or tflite_runtime), so the runtime reports nothing here.
        return None

    ops_method = ("per op class: the artifact timed against a copy with every op of one class "
                  "replaced by same-shape data movement, runs alternated, the difference of the "
                  "medians (converters/_tflite_ops.py); the Python interpreter has no op profiler")

    def operator_profile(self, x: np.ndarray, runs: int = 10, dims=None) -> list[dict]:
        """Time per op class by the method of ``converters/_tflite_ops.py``; ``ops_note`` says
        what XNNPACK took and which classes could not be isolated."""
        from collections import Counter

        from lkca_edge.converters import _tflite_ops

        counts = Counter(op.type for op in self.tensor_graph().ops)
        deleg = _tflite_ops.delegation(self._path, lambda p, t, fuse: self._prepared(p, t, fuse))
        x = np.asarray(x, np.float32)

        def set_input(interp):
            value = (np.ascontiguousarray(x, self._in_dtype) if self._in_q is None
                     else _quantize(x, self._in_q, self._in_dtype))
            interp.set_tensor(self._in["index"], value)

        entries, facts = _tflite_ops.class_times(
            self._path, lambda p, t: self._prepared(p, t), set_input,
            dict(counts.most_common()), deleg["delegated"], runs)
        skipped = "; ".join(f"{k} ({v})" for k, v in facts["not_isolated"].items())
        builtin = ", ".join(f"{k} x{v}" for k, v in deleg["builtin"].items()) or "none"
        whole = facts["whole_model_ms"]
        self.ops_note = (f"XNNPACK took {deleg['delegated_ops']} of "
                         f"{deleg['delegated_ops'] + deleg['builtin_ops']} ops in "
                         f"{deleg['xnnpack_partitions']} partitions; builtin kernels: {builtin}.")
        if whole:
            self.ops_note += (f" Isolated classes account for {facts['attributed_ms']:.3f} ms of "
                              f"{whole:.3f} ms per run")
        if skipped:
            self.ops_note += f"; not isolated: {skipped}"
        return entries

    def _prepared(self, path: Path, threads: int | None = None, fuse: bool = True):
        interp = _open_interpreter(path, threads or self._threads, fuse=fuse)
        with quiet():
            interp.allocate_tensors()
        return interp


@register_backend
class LiteRTBackend(Backend):
    name = "tflite"
    order = 2
    aliases = ("litert", "tfl", "ai-edge-litert")
    extension = ".tflite"
    install_hint = "litert-torch ai-edge-litert ai-edge-quantizer"
    convert_modules = ("torch", "litert_torch", "ai_edge_litert")
    runtime_modules = ("ai_edge_litert", "tflite_runtime")
    runtime_extra = "runtime-litert"
    recipes = RECIPES
    keeps_layers_float = True
    default_recipes = {"fp32": "fp32", "int8": "int8"}
    runner_class = LiteRTRunner
    tool_packages = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torch", "torchao")
    runtime_distributions = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}
    runtime_preload = (("ai_edge_litert.interpreter", "tflite_runtime.interpreter"),)
    input_kinds = ("tensor", "image")

    def keeps_float(self, recipe: Recipe) -> bool:
        # the AI Edge Quantizer (aeq-*) recipes quantize the whole graph
        return super().keeps_float(recipe) and recipe.option("tool") == "pt2e"

    def convert(self, model, example, recipe: Recipe, calibration, out_path: Path,
                app: AppInfo | None = None) -> ConversionResult:
        from lkca_edge.converters._rewrites import explicit_norms, keep_layers_float

        tool = recipe.option("tool")
        _require_tool_modules(recipe)
        details: dict = {"tool": tool}
        keep_float: tuple = ()
        if recipe.option("explicit_norms", True):
            model, keep_float = explicit_norms(model)
            details["norms"] = "explicit (7 ops per LayerNorm, float)"
        if recipe.option("float_layers") and not self.keeps_float(recipe):
            raise UserError(f"tflite recipe {recipe.name!r} cannot keep layers in float (only "
                            f"the PT2E int8 recipes can)")
        model, float_types = keep_layers_float(model, recipe.option("float_layers", ()))
        keep_float = keep_float + float_types
        with temporary_directory("tflite-convert") as work, _converter_progress_off(), _layout_hint(recipe):
            if tool == "pt2e":
                quantizer = self._pt2e_quantizer(recipe, keep_float)
                graph = self._quantize_pt2e(model, example, quantizer, calibration, recipe)
                edge = self._convert(graph, example, quantizer)
                self._serialize(edge, out_path)
            elif tool == "ai-edge-quantizer":
                fp32_path = Path(work) / "fp32.tflite"
                self._serialize(self._convert(model, example), fp32_path)
                self._quantize_aeq(fp32_path, out_path, recipe, calibration)
            else:
                self._serialize(self._convert(model, example), out_path)
        if app is not None:
            self._write_metadata(out_path, app)
        inputs, outputs = self._read_io(out_path)
        facts = self.inspect(out_path)
        facts.pop("io", None)  # the manifest's inputs/outputs already say it
        return ConversionResult(inputs, outputs, {**details, **facts})

    # -- steps -----------------------------------------------------------------------------------
    @staticmethod
    def _pt2e_quantizer(recipe: Recipe, keep_float: tuple = ()):
        """Symmetric per-channel PT2E; modules of the types in ``keep_float`` stay float."""
        from litert_torch.quantize.pt2e_quantizer import (PT2EQuantizer,
                                                          get_symmetric_quantization_config)

        from lkca_edge.converters._rewrites import qualified_name

        config = get_symmetric_quantization_config(
            is_per_channel=True, is_dynamic=recipe.option("mode") == "dynamic")
        quantizer = PT2EQuantizer().set_global(config)
        for module_type in keep_float:
            # this quantizer compares the "module.QualName" strings torch.export records
            quantizer.set_module_type(qualified_name(module_type), None)
        return quantizer

    @staticmethod
    def _quantize_pt2e(model, example, quantizer, calibration: np.ndarray, recipe: Recipe):
        """prepare -> calibrate on the real images -> convert (quantize ops left unfolded, as
        litert-torch lowers them)."""
        from lkca_edge.converters import _pt2e

        return _pt2e.quantize(model, example, quantizer, calibration,
                              calibrated=recipe.calibrated, fold_quantize=False)

    @staticmethod
    def _convert(module, example: np.ndarray, quantizer=None):
        import litert_torch
        import torch

        kwargs = {}
        if quantizer is not None:
            from litert_torch.quantize.quant_config import QuantConfig

            kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
        return litert_torch.convert(module, (torch.from_numpy(example),), **kwargs)

    @staticmethod
    def _serialize(edge, path: Path) -> None:
        edge.export(str(path))

    @staticmethod
    def _write_metadata(path: Path, app: AppInfo) -> None:
        """The standard TFLite metadata: names, the image input's normalization in pixel units
        and the labels as the output's TENSOR_AXIS_LABELS file, zipped onto the model."""
        from lkca_edge.converters import _tflite_metadata as tm

        prep = app.prep()
        mean, std = prep.pixel_mean_std()
        if app.input_kind == "image":
            described = ("RGB image, uint8 (1, H, W, 3) at the model's size; the normalization "
                         "below runs inside the model: feed the pixels as they are")
            lo, hi = (0.0,), (255.0,)
        else:
            described = ("RGB image as float32 (1, 3, H, W) (NCHW), normalized as "
                         "(pixel - mean) / std with the values below")
            lo = tuple((0.0 - m) / s for m, s in zip(mean, std))
            hi = tuple((255.0 - m) / s for m, s in zip(mean, std))
        labels = tm.AssociatedFile("labels.txt", "class names, one per line, in logit order")
        md = tm.ModelMetadata(
            name=app.model, description=app.description, version=app.version, author=app.author,
            license="", files={"labels.txt": app.labels_text().encode("utf-8")},
            inputs=(tm.ImageTensor("images", described, mean, std,
                                   color_space=("RGB" if app.input_kind == "image" or prep.channel_order == "RGB"
                                                else "UNKNOWN"),
                                   stats_min=lo, stats_max=hi),),
            outputs=(tm.FeatureTensor("logits", "one logit per class (softmax gives "
                                      "probabilities)", (labels,)),))
        path.write_bytes(tm.with_metadata(path.read_bytes(), md))

    @staticmethod
    def _quantize_aeq(src: Path, dst: Path, recipe: Recipe, calibration: np.ndarray) -> None:
        from ai_edge_quantizer import quantizer as aeq
        from ai_edge_quantizer import recipe as aeq_recipes

        q = aeq.Quantizer(str(src))
        q.load_quantization_recipe(getattr(aeq_recipes, recipe.option("aeq_recipe"))())
        cal = None
        if q.need_calibration:
            signature, input_name = _signature_input(src)
            samples = [{input_name: calibration[i:i + 1]} for i in range(len(calibration))]
            cal = q.calibrate({signature: samples}, num_threads=1)
        result = q.quantize(cal, enable_progress_bar=False, enable_progress_report=False)
        result.export_model(str(dst), overwrite=True)

    @staticmethod
    def _read_io(path: Path) -> tuple[list, list]:
        """The written model's real input/output names, shapes, dtypes and quantization."""
        interp = _open_interpreter(path, 1)
        return _io_specs(interp.get_input_details()), _io_specs(interp.get_output_details())

    # -- run -------------------------------------------------------------------------------------
    def inspect(self, path) -> dict:
        path = Path(path)
        self.check_artifact_file(path)
        interp = _open_interpreter(path, 1)
        counts: dict[str, int] = {}
        try:
            ops = interp._get_ops_details()  # private but stable since TF 2.5
        except Exception:  # an older runtime without it: no op counts
            ops = []
        for op in ops:
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        info = {"op_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
                "num_ops": len(ops), "num_subgraphs": interp.num_subgraphs(),
                "io": {"inputs": _io_specs(interp.get_input_details()),
                       "outputs": _io_specs(interp.get_output_details())}}
        info.update(_tensor_figures(path))
        try:
            from lkca_edge.converters._tflite_ops import delegation

            def opened(p, threads, fuse):
                interp = _open_interpreter(p, threads, fuse=fuse)
                with quiet():
                    interp.allocate_tensors()
                return interp

            info["xnnpack"] = delegation(path, opened)
        except UserError:
            raise
        except Exception:  # noqa: BLE001 - a runtime that cannot say: no delegation facts
            pass
        from lkca_edge.converters._tflite_metadata import read_metadata

        try:
            info["metadata"] = read_metadata(path.read_bytes())
        except Exception:  # noqa: BLE001 - a summary only; the runtime ignores metadata
            info["metadata"] = None
        return info

    def check_artifact_file(self, path: Path) -> None:
        """Refuse a file that is not a TFLite flatbuffer before native code parses it."""
        super().check_artifact_file(path)
        with open(path, "rb") as f:
            head = f.read(8)
        if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
            raise UserError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier)")


@contextlib.contextmanager
def _converter_progress_off():
    """litert-torch prints a progress tree to stdout (rich); keep stdout clean unless debugging."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    saved = os.environ.get(key)
    if not debug_enabled():
        os.environ[key] = "n"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


_LAYOUT_HINT = ("LiteRT int8 kernels need the constant on the right of the token-mixing matmul: "
                "export LKCA with form fused (the default) or frozen-linear, not frozen")


@contextlib.contextmanager
def _layout_hint(recipe: Recipe):
    """Turn the known T @ V batch-matmul failure into one line that says what to do."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if "batch_matmul" not in str(exc):
            raise
        raise UserError(f"tflite recipe {recipe.name!r} failed on a batch-matmul "
                        f"({first_line(exc)[:160]}); {_LAYOUT_HINT}") from None


# Modules only some recipes need, beyond convert_modules.
_TOOL_MODULES = {"pt2e": ("torchao",), "ai-edge-quantizer": ("ai_edge_quantizer",)}


def _require_tool_modules(recipe: Recipe) -> None:
    import importlib.util

    missing = [m for m in _TOOL_MODULES.get(recipe.option("tool"), ())
               if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailable(f"tflite recipe {recipe.name!r} needs {', '.join(missing)}, which "
                                 f"is not installed (pip install {missing[0].replace('_', '-')})")


def _signature_input(path: Path) -> tuple[str, str]:
    """(signature key, input name) of a single-signature, single-input .tflite."""
    interp = _open_interpreter(path, 1)
    signatures = interp.get_signature_list()
    key = next(iter(signatures))
    return key, signatures[key]["inputs"][0]


def _tensor_figures(path: Path) -> dict:
    """Constant (weight) bytes and the summed size of activation tensors, read from the
    flatbuffer. The sum is an upper bound of the arena: LiteRT's planner reuses memory between
    tensors whose lifetimes do not overlap. Empty where the schema module is not installed."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return {}
    try:
        data = path.read_bytes()
        m = schema.Model.GetRootAs(data, 0)
        buffer_bytes = []
        for i in range(m.BuffersLength()):
            b = m.Buffers(i)
            buffer_bytes.append(b.DataLength() or int(b.Size() if hasattr(b, "Size") else 0))
        tensors = weights = activation = constant_tensors = 0
        for s in range(m.SubgraphsLength()):
            g = m.Subgraphs(s)
            for t in range(g.TensorsLength()):
                tensor = g.Tensors(t)
                tensors += 1
                if 0 < tensor.Buffer() < len(buffer_bytes) and buffer_bytes[tensor.Buffer()]:
                    weights += buffer_bytes[tensor.Buffer()]
                    constant_tensors += 1
                else:
                    n = int(np.prod(tensor.ShapeAsNumpy())) if tensor.ShapeLength() else 1
                    activation += n * _TYPE_BYTES.get(tensor.Type(), 4)
    except Exception:  # an unexpected schema: report nothing rather than fail an inspect
        return {}
    return {"num_tensors": tensors, "constant_tensors": constant_tensors,
            "weight_bytes": weights, "activation_bytes_upper_bound": activation}


# TensorType enum of the TFLite schema -> bytes per element (FLOAT32=0, FLOAT16=1, INT32=2,
# UINT8=3, INT64=4, BOOL=6, INT16=7, INT8=9, FLOAT64=10, UINT32=15, UINT16=16, INT4=17).
_TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8, 15: 4, 16: 2, 17: 1}
