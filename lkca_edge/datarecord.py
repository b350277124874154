"""Which data set: the ``DataRecord`` checkpoints and manifests carry, and the ``--dataset`` spec
forms (no numpy, no images; loading is ``lkca_edge.data``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lkca_edge.errors import UserError, unknown_name

SPLIT_SEED = 0
KINDS = ("digits", "cifar10", "cifar100", "folder")
DIGIT_LABELS = tuple(str(i) for i in range(10))
KINDS_WITH_PATH = ("cifar10", "cifar100", "folder")


@dataclass(frozen=True)
class DataRecord:
    """Which data set, as checkpoints and manifests record it."""

    kind: str                      # digits | cifar10 | cifar100 | folder
    path: str | None               # absolute directory (None for digits)
    labels: tuple[str, ...] = ()   # label names, in class-index order
    split_seed: int = SPLIT_SEED

    @property
    def spec(self) -> str:
        """What a user passes to ``--dataset``."""
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "labels": list(self.labels),
                "split_seed": self.split_seed, "spec": self.spec}

    @classmethod
    def from_dict(cls, d, source: str = "record") -> "DataRecord":
        """A recorded data set; a bare spec string (older files) is read as one too."""
        if isinstance(d, str):
            kind, path = parse_spec(d)
            return cls(kind, path, DIGIT_LABELS if kind == "digits" else ())
        if not isinstance(d, dict):
            raise UserError(f"{source}: a data record must be an object, got {type(d).__name__}")
        kind, path, labels = d.get("kind"), d.get("path"), d.get("labels", [])
        seed = d.get("split_seed", SPLIT_SEED)
        if kind not in KINDS or (path is not None and not isinstance(path, str)) \
                or not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) \
                or not isinstance(seed, int) or isinstance(seed, bool):
            raise UserError(f"{source}: bad data record {d!r}")
        return cls(kind, path, tuple(labels), seed)

    def missing(self) -> str | None:
        """Why this data set cannot be loaded here, or None."""
        if self.path is not None and not Path(self.path).is_dir():
            return f"{self.path} is not found"
        return None


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``folder:DIR`` -> ("folder", absolute DIR); relative paths are resolved now, when
    recorded, so the record means the same data from any working directory."""
    if not isinstance(spec, str) or not spec:
        raise UserError(f"bad data set spec {spec!r} (valid: {', '.join(_spec_forms())})")
    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise unknown_name("dataset", kind, _spec_forms())
    if kind in KINDS_WITH_PATH:
        if not arg:
            raise UserError(f"{kind} needs a directory: --dataset {kind}:DIR")
        return kind, str(Path(arg).expanduser().resolve())
    return kind, None


def _spec_forms() -> list[str]:
    return [f"{k}{':DIR' if k in KINDS_WITH_PATH else ''}" for k in KINDS]
