"""The small interface every backend implements, and its registry.

A backend is one module in ``converters/`` (installed as ``lkca_edge.converters``) that defines a
``Backend`` subclass and registers an instance with ``@register_backend``; every fact about a
backend (name, aliases, extension, recipes, packages, runtime) is an attribute of that class. Heavy imports (torch, executorch, coremltools, ...)
happen inside methods, so a missing package disables only that backend.

Conversion reads like ExecuTorch's aot_compiler: export -> quantize -> lower -> serialize, each a
short named step inside ``convert``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lkca_edge.errors import BackendUnavailable, UserError, unknown_name

PRECISIONS = ("fp32", "fp16", "int8")
MAX_ARTIFACT_BYTES = 4 << 30  # an artifact and every file its runtime reads with it


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


@dataclass(frozen=True)
class AppInfo:
    """What an app needs, carried inside the artifact in its format's own convention: names,
    labels, preprocessing and the kind of input (``lkca_edge.preprocessing.INPUT_KINDS``)."""

    model: str
    description: str
    version: str
    labels: tuple[str, ...]
    preprocessing: dict            # Preprocessing.to_dict()
    input_kind: str = "tensor"     # tensor: float32 (N, C, H, W); image: uint8 (N, H, W, 3) RGB
    dynamic_batch: bool = False
    author: str = "lkca-edge"

    def prep(self):
        from lkca_edge.preprocessing import Preprocessing

        return Preprocessing.from_dict(self.preprocessing)

    def labels_text(self) -> str:
        """The labels file every artifact carries: one class name per line, in class order."""
        return "".join(f"{label}\n" for label in self.labels)


class Runner:
    """A loaded artifact: ``runner(x)`` maps one batch of the artifact's input (float32
    (1, C, H, W), or uint8 (1, H, W, 3) RGB for an image input) to float32 logits."""

    backend: str = ""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_many(self, images: np.ndarray, batch_size: int = 1) -> np.ndarray:
        """Logits for N inputs, ``batch_size`` per call (1 unless the artifact has a dynamic
        batch dimension)."""
        step = max(1, int(batch_size))
        return np.concatenate([self(images[i:i + step]) for i in range(0, len(images), step)])

    # Profile hooks: optional facts the runtime itself reports (None where it says nothing).
    def planned_memory_bytes(self) -> int | None:
        return None

    def memory_facts(self) -> dict:
        """Static memory figures of the loaded artifact, by ``profiles.schema.MEMORY_FIELDS``
        name (e.g. ``activation_arena_bytes``, ``constant_bytes``); {} where the runtime says
        nothing."""
        return {}

    # How ``operator_profile`` times operators ("" = it does not), and what the last profile
    # found worth saying (set by ``operator_profile``).
    ops_method: str = ""
    ops_note: str = ""

    def operator_profile(self, x: np.ndarray, runs: int = 10, dims=None) -> list[dict]:
        """Per-operator time of ``runs`` runs on the batch ``x``: ``_graph.op_table`` entries
        (name, type, module, count, total_ms, mean_ms, share, delegated), or [] where the
        runtime offers no way. ``dims`` (depth, tokens, dim) of the model lets a runner charge
        each op to the source layer it belongs to."""
        return []

    # Intermediate values (per-layer comparison): the artifact's own graph, and a run of the
    # artifact with chosen graph tensors as extra outputs. ``tap_method`` says how ("" = cannot).
    tap_method: str = ""

    def tensor_graph(self):
        """The artifact's dataflow graph as a ``converters._graph.TensorGraph``."""
        raise UserError(f"the {self.backend} runner exposes no graph")

    def run_with_taps(self, images: np.ndarray, values: list[str]):
        """(logits (N, classes), {value id: (N, elements) float32}) for (N, C, H, W) images, one
        batch-1 run each, with the graph tensors ``values`` exposed as extra outputs."""
        raise UserError(f"the {self.backend} runner exposes no intermediate tensors")


@dataclass
class ConversionResult:
    """What a backend reports about the artifact it wrote (goes into the manifest)."""

    inputs: list[dict] = field(default_factory=list)   # name, shape, dtype, [scale, zero_point]
    outputs: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)       # backend-specific: delegation, opset, ...
    # Files that travel with the artifact, written beside it as ``<artifact>.<suffix>``.
    companions: dict[str, bytes] = field(default_factory=dict)


class Backend:
    """Base class: override the class attributes and the four methods."""

    name: str = ""
    order: int = 100             # position in listings and reports
    aliases: tuple[str, ...] = ()  # other names users type (xnnpack, litert, ort, ...)
    extension: str = ""          # ".pte", ".tflite", ".onnx", ".mlpackage"
    install_hint: str = ""       # what to pip install when unavailable
    convert_modules: tuple[str, ...] = ()   # importable modules needed to convert
    runtime_modules: tuple[str, ...] = ()   # any one of these is enough to run
    runtime_extra: str | None = None         # the lkca-edge extra that installs the runtime on a board
    recipes: dict[str, Recipe] = {}
    default_recipes: dict[str, str] = {}     # precision -> recipe name
    # Versions recorded in manifests: distribution names.
    tool_packages: tuple[str, ...] = ()
    # Runtime module -> its distribution (the measuring child records the runtime's version).
    runtime_distributions: dict[str, str] = {}
    # What the Runner imports when it loads, in groups: the first importable module of each group
    # is imported before timing, so load_ms times the model, not the library.
    runtime_preload: tuple[tuple[str, ...], ...] = ()
    runner_class: type | None = None         # Runner(path, threads), built by ``load``
    # Whether ``convert`` honours a recipe's ``float_layers`` option (per-layer names kept in
    # float by mixed precision: int8-mixed recipes and export --fallback); see keeps_float.
    keeps_layers_float: bool = False
    # Inputs an artifact of this backend can take (lkca_edge.preprocessing.INPUT_KINDS), and
    # the one ``export`` makes unless told.
    input_kinds: tuple[str, ...] = ("tensor",)
    default_input_kind: str = "tensor"
    dynamic_batch: bool = False              # can export a variable batch dimension
    extensions: tuple[str, ...] = ()         # other artifact formats it writes (.ort)

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
            return f"the {self.name} runtime is not installed ({self.runtime_install_hint()})"
        return None

    def runtime_install_hint(self) -> str:
        """What installs this backend's runtime: the board extra, else the packages."""
        if self.runtime_extra:
            return f"pip install 'lkca-edge[{self.runtime_extra}]'"
        return f"pip install {self.install_hint}"

    def require_available(self) -> None:
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)

    def require_runnable(self) -> None:
        reason = self.runnable()
        if reason:
            raise BackendUnavailable(reason)

    # -- recipes --------------------------------------------------------------------------------
    def keeps_float(self, recipe: Recipe) -> bool:
        """Whether this int8 ``recipe`` can keep named layers in float (mixed precision)."""
        return self.keeps_layers_float and recipe.precision == "int8"

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

    # -- inputs ---------------------------------------------------------------------------------
    def input_kind(self, kind: str | None) -> str:
        """Resolve ``--input`` for this backend: one of ``input_kinds`` (default when None)."""
        if kind is None:
            return self.default_input_kind
        if kind not in self.input_kinds:
            raise UserError(f"{self.name} artifacts take --input {' or '.join(self.input_kinds)}, "
                            f"not {kind!r}")
        return kind

    def graph_for(self, model, app: AppInfo | None):
        """The torch module to convert for ``app``'s input kind: for an image input, ``model``
        behind the shared in-graph normalization (``lkca_edge.image_input.ImageInput``)."""
        if app is None or app.input_kind == "tensor":
            return model
        from lkca_edge.image_input import ImageInput

        return ImageInput(model, app.prep())

    # -- the four operations ---------------------------------------------------------------------
    def convert(self, model, example: np.ndarray, recipe: Recipe, calibration: np.ndarray,
                out_path: Path, app: AppInfo | None = None) -> ConversionResult:
        """Convert the torch ``model`` (eval, batch-1 ``example`` of the artifact's input: what
        ``graph_for`` made it take) with ``recipe`` into ``out_path``; ``app`` (when given) is
        written into the file as the format has it."""
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

    # -- integrity -------------------------------------------------------------------------------
    def artifact_files(self, path: str | Path) -> list[Path]:
        """Every file this backend's runtime opens for the artifact at ``path``: what its
        manifest's sha256 covers. Refuses (UserError) an artifact that would make the runtime
        open anything else: a symlink, a path leaving the artifact, a FIFO or device."""
        from lkca_edge.safeio import check_regular

        path = Path(path)
        check_regular(path, f"{self.name} artifact", limit=MAX_ARTIFACT_BYTES)
        return [path]

    def digest(self, path: str | Path) -> str:
        """The sha256 a manifest records: of exactly ``artifact_files(path)``."""
        from lkca_edge.manifest import sha256_of

        return sha256_of(path, self.artifact_files(path))

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
# Modules of this package that are not backends: the interface and helpers shared by backends.
_NOT_BACKENDS = ("base",)


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: a backend module registers its ``Backend`` subclass under ``cls.name``."""
    _BACKENDS[cls.name] = cls()
    return cls


def _backend_modules() -> list[str]:
    """Every module of this package that defines a backend: ``<name>.py`` beside this file
    (helpers are ``_name.py``). A fifth backend is one new file."""
    import pkgutil

    return [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
            if not m.name.startswith("_") and m.name not in _NOT_BACKENDS]


def _load_all() -> dict[str, Backend]:
    for module in _backend_modules():
        importlib.import_module(f"{__package__}.{module}")
    return dict(sorted(_BACKENDS.items(), key=lambda kv: (kv[1].order, kv[0])))


def backend_names() -> list[str]:
    """Names of every backend, in display order (executorch, coreml, tflite, onnx)."""
    return list(_load_all())


def resolve_backend_name(name: str) -> str:
    """The canonical backend name for ``name`` or one of a backend's aliases (xnnpack, litert, ...)."""
    key = str(name).lower()
    backends = _load_all()
    if key in backends:
        return key
    for backend in backends.values():
        if key in backend.aliases:
            return backend.name
    raise unknown_name("backend", str(name), list(backends))


def get_backend(name: str) -> Backend:
    """The backend registered under ``name`` (or an alias such as xnnpack, litert, ort)."""
    return _BACKENDS[resolve_backend_name(name)]



def read_artifact(path: str | Path) -> bytes:
    """An artifact's bytes for a second look (taps, op classes, inspection): a regular file,
    within ``MAX_ARTIFACT_BYTES``."""
    from lkca_edge.safeio import read_bytes

    return read_bytes(path, "artifact", limit=MAX_ARTIFACT_BYTES)


def package_files(root: Path, what: str) -> list[Path]:
    """The regular files of an artifact directory (a .mlpackage), walked without following
    links; a symlink or any member that is not a regular file or directory is refused, so the
    runtime can only ever open the bytes the sha256 covers."""
    import os
    import stat

    from lkca_edge.safeio import file_type

    root = Path(root)
    files, total = [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            member = Path(dirpath) / name
            st = os.lstat(member)
            rel = member.relative_to(root)
            if stat.S_ISLNK(st.st_mode):
                raise UserError(f"{what} {root} holds a symlink ({rel} -> {os.readlink(member)}); "
                                f"refused: the runtime would read files outside the package")
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise UserError(f"{what} {root} holds {rel}, which is not a regular file (it is "
                                f"{file_type(st.st_mode)}); refused")
            total += st.st_size
            if total > MAX_ARTIFACT_BYTES:
                raise UserError(f"{what} {root} holds more than {MAX_ARTIFACT_BYTES >> 30} GB; refused")
            files.append(member)
    return sorted(files)


def inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` when that stays inside ``root`` (symlinks resolved), else None."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        return None
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts:
        return None
    target = root / rel
    try:
        target.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return target


def io_spec(name: str, shape, dtype: str, quantization: tuple[float, int] | None = None) -> dict:
    """One input or output of an artifact as the manifest records it (a dynamic dimension is
    its name, e.g. "batch")."""
    d = {"name": name, "shape": [s if isinstance(s, str) else int(s) for s in shape], "dtype": dtype}
    if quantization is not None:
        d["scale"], d["zero_point"] = float(quantization[0]), int(quantization[1])
    return d


def float_io(example: np.ndarray, num_classes: int, input_name: str = "images",
             output_name: str = "logits", batch=None) -> tuple[list, list]:
    """The I/O of an (N, C, H, W) float32 or (N, H, W, 3) uint8 -> (N, classes) float32
    artifact; ``batch`` names a dynamic batch dimension."""
    n = batch if batch is not None else example.shape[0]
    return ([io_spec(input_name, (n, *example.shape[1:]), np.dtype(example.dtype).name)],
            [io_spec(output_name, (n, num_classes), "float32")])


def num_outputs(model, example: np.ndarray) -> int:
    """The number of logits ``model`` returns per image: its config's classes for a zoo network,
    else one forward pass on ``example`` (any torch module; float32, or uint8 pixels for a
    graph that takes an image)."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "num_classes"):
        return int(config.num_classes)
    import torch

    with torch.no_grad():
        return int(model(torch.from_numpy(np.ascontiguousarray(example))).shape[-1])


def model_name(model) -> str:
    """A zoo network's name, else the class name of a user's own torch module."""
    return getattr(model, "zoo_name", None) or type(model).__name__
