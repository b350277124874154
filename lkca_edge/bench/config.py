"""What a bench run is asked to do: ``BenchConfig``, its checks and its command line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lkca_edge.errors import UserError

DEFAULT_MODELS = ("lkca-1m",)
DEFAULT_PRECISIONS = ("fp32", "int8", "int8-mixed")
# Bench "precisions" that are a recipe of another precision: label -> (precision, recipe). A cell
# of a variant exists only for the backends that have the recipe.
VARIANTS = {"int8-mixed": ("int8", "int8-mixed")}


def cell_recipe(backend, label: str):
    """The recipe a cell of precision ``label`` (a precision or a ``VARIANTS`` label) exports."""
    if label in VARIANTS:
        precision, recipe = VARIANTS[label]
        return backend.recipe(precision, recipe)
    return backend.recipe(label)


def has_cell(backend_name: str, label: str) -> bool:
    """Whether a (backend, precision label) cell exists: variants only where the recipe does."""
    if label not in VARIANTS:
        return True
    from lkca_edge.converters import get_backend

    return VARIANTS[label][1] in get_backend(backend_name).recipes


def default_backends() -> list[str]:
    """Every backend this install knows (``lkca_edge.converters``)."""
    from lkca_edge.converters import backend_names

    return backend_names()


@dataclass
class BenchConfig:
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    backends: list[str] = field(default_factory=default_backends)
    precisions: list[str] = field(default_factory=lambda: list(DEFAULT_PRECISIONS))
    device: str = "host"
    runs: int = 100
    warmup: int = 10
    op_runs: int = 10
    threads: int | None = None
    out: str | None = None            # default runs/<timestamp>/
    db: str | None = None             # default: the user's data dir (or LKCA_EDGE_DB)
    record: bool = True               # write the run into the history database
    checkpoint: str | None = None
    dataset: str | None = None        # data set spec; None: each model's recorded data
    wide: bool = False                # the full terminal table (default fits 100 columns)
    validation_limit: int | None = None
    profiles_dir: list[str] | None = None
    remote: str | None = None         # measure every cell there (ssh://, adb://; default: the
    remote_command: str | None = None  # device profile's remote:, else this host)
    ssh_options: list[str] = field(default_factory=list)
    progress: bool = True
    argv: list[str] | None = None     # the command line, for the record
    per_layer: bool = True            # int8 cells: the per-layer table (validate --per-layer)


@dataclass
class BenchOutcome:
    results: dict
    out_dir: Path
    files: dict[str, Path]
    run_id: int | None        # id in the history database (None when not recorded)
    db_path: Path | None
    db_error: str | None = None


def split_names(values) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (repeats dropped, order kept)."""
    out: list[str] = []
    for v in values or []:
        for name in str(v).split(","):
            name = name.strip()
            if name and name not in out:
                out.append(name)
    return out


def check_config(cfg: BenchConfig) -> None:
    from lkca_edge.converters import PRECISIONS, resolve_backend_name
    from lkca_edge.errors import unknown_name
    from lkca_edge.zoo import get_spec

    if not cfg.models and cfg.checkpoint is None:
        raise UserError("--models needs at least one model")
    if cfg.checkpoint is None:
        for m in cfg.models:
            get_spec(m)  # unknown model -> one line with suggestions
    if not cfg.backends:
        raise UserError("--backends needs at least one backend")
    cfg.backends = list(dict.fromkeys(resolve_backend_name(b) for b in cfg.backends))
    if not cfg.precisions:
        raise UserError("--precisions needs at least one precision")
    for p in cfg.precisions:
        if p not in PRECISIONS and p not in VARIANTS:
            raise unknown_name("precision", p, (*PRECISIONS, *VARIANTS))
    if not any(has_cell(b, p) for b in cfg.backends for p in cfg.precisions):
        having = {v: [b for b in default_backends() if has_cell(b, v)] for v in cfg.precisions}
        raise UserError("no cell to bench: " + "; ".join(
            f"{v} exists for {', '.join(having[v]) or 'no backend'}" for v in cfg.precisions)
            + f", not for {', '.join(cfg.backends)}")
    from lkca_edge.ranges import check_arg, check_optional

    check_arg("runs", cfg.runs)
    check_arg("warmup", cfg.warmup)
    check_arg("op_runs", cfg.op_runs)
    check_optional("threads", cfg.threads)
    check_optional("limit", cfg.validation_limit)
    if cfg.checkpoint is not None:
        if len(cfg.models) > 1:
            raise UserError("--checkpoint applies to one model; pass at most one --models NAME with it")
        if not Path(cfg.checkpoint).is_file():
            raise UserError(f"checkpoint not found: {cfg.checkpoint}")
        from lkca_edge.builder import build_model_from

        # a bad checkpoint, or one of another architecture than the name given: one line, now
        given = cfg.models[0] if cfg.models else None
        model = build_model_from(zoo_name_or_none(given), cfg.checkpoint, {})
        if given is not None and given != model.zoo_name and zoo_name_or_none(given) is None:
            get_spec(given)  # neither the checkpoint's own name nor a zoo name: refused
        cfg.models = [model.zoo_name]
    if cfg.remote is not None:
        from lkca_edge.profiles.remote import AdbTarget, parse_remote

        if isinstance(parse_remote(cfg.remote), AdbTarget):
            raise UserError("bench --remote takes ssh:// boards (an adb:// phone needs a runner "
                            "per backend: use `lkca-edge profile --remote adb://... --runner`)")
    if cfg.dataset is not None:
        from lkca_edge.datarecord import parse_spec

        kind, path = parse_spec(cfg.dataset)  # relative paths mean the same data on --resume
        cfg.dataset = kind if path is None else f"{kind}:{path}"


def zoo_name_or_none(name: str | None) -> str | None:
    """``name`` when it is a zoo entry, else None (a checkpoint's own architecture name)."""
    from lkca_edge.zoo import get_spec

    if name is None:
        return None
    try:
        return get_spec(name).name
    except UserError:
        return None


def default_run_dir(root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / stamp
    n = 2
    while path.exists():
        path = Path(root) / f"{stamp}-{n}"
        n += 1
    return path


def canonical_argv(cfg: BenchConfig) -> list[str]:
    """The command line that repeats this bench (when the real one is unknown, e.g. in tests)."""
    argv = ["lkca-edge", "bench", "--models", *cfg.models, "--backends", *cfg.backends,
            "--precisions", *cfg.precisions, "--device", cfg.device, "--runs", str(cfg.runs),
            "--warmup", str(cfg.warmup), "--op-runs", str(cfg.op_runs)]
    for flag, value in (("--threads", cfg.threads), ("--checkpoint", cfg.checkpoint),
                        ("--limit", cfg.validation_limit), ("--out", cfg.out), ("--db", cfg.db),
                        ("--dataset", cfg.dataset), ("--remote", cfg.remote),
                        ("--remote-command", cfg.remote_command)):
        if value is not None:
            argv += [flag, str(value)]
    for option in cfg.ssh_options or []:
        argv += ["--ssh-option", option]
    if not cfg.record:
        argv.append("--no-history")
    return argv
