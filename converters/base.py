"""The small interface every backend implements, and its registry.

A backend is one module in ``converters/`` that defines a ``Backend`` subclass and registers
an instance with ``@register_backend``. Heavy imports (torch, executorch, coremltools, ...)
happen inside methods, so a missing package disables only that backend.

Conversion reads like ExecuTorch's aot_compiler: export -> quantize -> lower -> serialize, each a
short named step inside ``convert``.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lkca_edge.errors import BackendUnavailable, UserError, unknown_name

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Recipe:
    """A named conversion recipe: data, not flags scattered through code."""

    name: str
    precision: str  # fp32 | fp16 | int8
    description: str
    calibrated: bool = False  # needs calibration images
    options: tuple[tuple[str, object], ...] = ()

    def option(self, key: str, default=None):
        return dict(self.options).get(key, default)

    def to_dict(self) -> dict:
        return {"name": self.name, "precision": self.precision, "description": self.description,
                "calibrated": self.calibrated, "options": dict(self.options)}


class Runner:
    """A loaded artifact: ``runner(x)`` maps one float32 (1, C, H, W) batch to float32 logits."""

    backend: str = ""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_many(self, images: np.ndarray) -> np.ndarray:
        """Logits for (N, C, H, W) images, one batch-1 call each (artifacts are batch 1)."""
        return np.concatenate([self(images[i:i + 1]) for i in range(len(images))])

    # Profile hooks: optional facts the runtime itself reports (None where it says nothing).
    def planned_memory_bytes(self) -> int | None:
        return None

    def operator_profile(self, x: np.ndarray, runs: int = 10) -> list[dict]:
        """[{'op': name, 'ms': mean time, 'count': n, 'delegated': bool|None}, ...] or []."""
        return []


@dataclass
class ConversionResult:
    """What a backend reports about the artifact it wrote (goes into the manifest)."""

    inputs: list[dict] = field(default_factory=list)   # name, shape, dtype, [scale, zero_point]
    outputs: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)       # backend-specific: delegation, opset, ...


class Backend:
    """Base class: override the class attributes and the four methods."""

    name: str = ""
    extension: str = ""          # ".pte", ".tflite", ".onnx", ".mlpackage"
    install_hint: str = ""       # what to pip install when unavailable
    convert_modules: tuple[str, ...] = ()   # importable modules needed to convert
    runtime_modules: tuple[str, ...] = ()   # any one of these is enough to run
    recipes: dict[str, Recipe] = {}
    default_recipes: dict[str, str] = {}     # precision -> recipe name
    # Versions recorded in manifests: distribution names.
    tool_packages: tuple[str, ...] = ()
    runner_class: type | None = None         # Runner(path, threads), built by ``load``

    # -- availability ---------------------------------------------------------------------------
    def available(self) -> str | None:
        """None when this backend can convert here, else the reason (with how to install)."""
        missing = [m for m in self.convert_modules if importlib.util.find_spec(m) is None]
        if missing:
            return (f"{self.name} conversion needs {', '.join(missing)}, which is not installed "
                    f"(pip install {self.install_hint})")
        return None

    def runnable(self) -> str | None:
        """None when artifacts of this backend can run on this machine, else the reason."""
        if self.runtime_modules and not any(importlib.util.find_spec(m) for m in self.runtime_modules):
            return (f"the {self.name} runtime is not installed "
                    f"(pip install {self.install_hint})")
        return None

    def require_available(self) -> None:
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)

    def require_runnable(self) -> None:
        reason = self.runnable()
        if reason:
            raise BackendUnavailable(reason)

    # -- recipes --------------------------------------------------------------------------------
    def recipe(self, precision: str | None = None, recipe: str | None = None) -> Recipe:
        """Resolve ``--precision``/``--recipe`` to one of this backend's recipes."""
        if recipe is not None:
            if recipe not in self.recipes:
                raise unknown_name(f"{self.name} recipe", recipe, list(self.recipes))
            chosen = self.recipes[recipe]
            if precision is not None and chosen.precision != precision:
                raise UserError(f"{self.name} recipe {recipe!r} is {chosen.precision}, not {precision}")
            return chosen
        precision = precision or "fp32"
        if precision not in self.default_recipes:
            raise unknown_name(f"{self.name} precision", precision, list(self.default_recipes))
        return self.recipes[self.default_recipes[precision]]

    # -- the four operations ---------------------------------------------------------------------
    def convert(self, model, example: np.ndarray, recipe: Recipe, calibration: np.ndarray,
                out_path: Path) -> ConversionResult:
        """Convert the torch ``model`` (eval, batch-1 ``example``) with ``recipe`` into ``out_path``."""
        raise NotImplementedError

    def load(self, path: str | Path, threads: int = 1) -> Runner:
        """Load an artifact for inference: runtime present -> file checks -> ``runner_class``.
        Must not import torch (boards may not have it)."""
        self.require_runnable()
        path = Path(path)
        self.check_artifact_file(path)
        if self.runner_class is None:
            raise NotImplementedError(f"{self.name} has no runner")
        return self.runner_class(path, threads)

    def inspect(self, path: str | Path) -> dict:
        """Static facts about an artifact without running it (op counts by type, ...)."""
        return {}

    def check_artifact_file(self, path: Path) -> None:
        """Refuse a path that cannot be this backend's artifact, with one clear line."""
        if not path.exists():
            raise UserError(f"artifact not found: {path}")
        if self.extension == ".mlpackage":
            if not path.is_dir():
                raise UserError(f"{path} is not a Core ML package (expected a .mlpackage directory)")
        elif not path.is_file():
            raise UserError(f"{path} is not a {self.name} artifact file")
        elif path.stat().st_size == 0:
            raise UserError(f"{path} is empty")


_BACKENDS: dict[str, Backend] = {}
_BACKEND_MODULES = ("executorch", "coreml", "tflite", "onnx")  # converters/<name>.py
_ALIASES = {"xnnpack": "executorch", "pte": "executorch", "litert": "tflite", "ort": "onnx",
            "onnxruntime": "onnx", "mlpackage": "coreml"}


def register_backend(cls: type[Backend]) -> type[Backend]:
    _BACKENDS[cls.name] = cls()
    return cls


def _load_all() -> None:
    for module in _BACKEND_MODULES:
        if module not in _BACKENDS:
            importlib.import_module(f"converters.{module}")


def backend_names() -> list[str]:
    return list(_BACKEND_MODULES)


def get_backend(name: str) -> Backend:
    """The backend registered under ``name`` (or an alias such as xnnpack, litert, ort)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BACKEND_MODULES:
        raise unknown_name("backend", name, backend_names())
    if key not in _BACKENDS:
        importlib.import_module(f"converters.{key}")
    return _BACKENDS[key]


def all_backends() -> list[Backend]:
    _load_all()
    return [_BACKENDS[n] for n in _BACKEND_MODULES]


def backend_for_artifact(path: str | Path) -> Backend:
    """Pick the backend from an artifact's extension (the manifest, when present, wins)."""
    path = Path(path)
    suffix = path.suffix.lower()
    for name in _BACKEND_MODULES:
        b = get_backend(name)
        if b.extension == suffix:
            return b
    raise UserError(f"cannot tell the backend of {path}: expected one of "
                    f"{', '.join(get_backend(n).extension for n in _BACKEND_MODULES)}")



def rewrite_modules(model, replace):
    """A deep copy of ``model`` (in eval mode) in which every submodule ``child`` with
    ``replace(child)`` not None is swapped for that result. How converters hand a runtime the
    same function in ops it runs well (ExecuTorch's and LiteRT's LayerNorm rewrites)."""
    import copy

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            new = replace(child)
            if new is not None:
                setattr(parent, name, new)
    return model.eval()


@contextlib.contextmanager
def quiet():
    """Silence converters' warnings and native log spam (absl, torch) unless LKCA_EDGE_DEBUG=1.

    Native libraries log to file descriptor 2 directly, so fd 2 is pointed at a temporary file
    for the duration; it is replayed to stderr if the block fails, so nothing is lost.
    """
    import os
    import sys
    import tempfile
    import warnings

    if os.environ.get("LKCA_EDGE_DEBUG") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed and os.environ.get("LKCA_EDGE_SHOW_NATIVE_LOG") == "1":
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace")[-4000:])
