"""Artifact manifests: ``<artifact>.manifest.json`` beside every artifact.

A manifest says what the artifact is (model, config, form, backend, recipe, precision), how it
was made (calibration, tool versions, time), which data it was calibrated and validated on (a
data record with its label names), how to feed it (I/O, preprocessing), that it is the same file
(sha256) and how it validated, with the validation pack that lets any machine re-validate it.
No torch import.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lkca_edge.errors import UserError
from lkca_edge.fileio import write_json
from lkca_edge.preprocessing import INPUT_KINDS

SCHEMA = "lkca-edge-manifest/2"
READABLE_SCHEMAS = ("lkca-edge-manifest/1", SCHEMA)  # /1 had no data record, pack or trained


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names + contents, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_of(path: str | Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


@dataclass
class Manifest:
    schema: str
    artifact: str               # file name, relative to the manifest
    sha256: str
    size_bytes: int
    backend: str
    recipe: dict
    precision: str
    model: str
    config: dict
    form: str | None
    source: dict                # checkpoint path/format or shipped weights tag, for re-validation
    preprocessing: dict
    calibration: dict | None
    inputs: list
    outputs: list
    details: dict
    tool_versions: dict
    created: str
    conversion_seconds: float
    validation: dict | None = None
    params: int = 0
    macs: int = 0
    data: dict | None = None             # the data set calibrated and validated on (a DataRecord)
    validation_pack: dict | None = None  # {file, sha256, size_bytes, n_images, split}
    trained: bool = True                 # False: an untrained zoo config (accuracy not meaningful)
    # What the artifact takes: "tensor" (float32 N, C, H, W) or "image" (uint8 N, H, W, 3 RGB,
    # normalised inside the graph); manifests from before this field are "tensor".
    input_kind: str = "tensor"
    # Files that travel with the artifact, by role: {"labels": "<artifact>.labels.txt", ...}.
    files: dict = field(default_factory=dict)

    @staticmethod
    def path_for(artifact: str | Path) -> Path:
        artifact = Path(artifact)
        return artifact.with_name(artifact.name + ".manifest.json")

    @staticmethod
    def companion_path(artifact: str | Path, suffix: str) -> Path:
        """``<artifact>.<suffix>``: where a file that travels with an artifact lives
        (``labels.txt`` -> ``model.tflite.labels.txt``)."""
        artifact = Path(artifact)
        return artifact.with_name(f"{artifact.name}.{suffix}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "manifest") -> "Manifest":
        if not isinstance(d, dict):
            raise UserError(f"{source}: not a JSON object")
        if d.get("schema") not in READABLE_SCHEMAS:
            raise UserError(f"{source}: unsupported manifest schema {d.get('schema')!r} (expected {SCHEMA})")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UserError(f"{source}: unknown manifest field(s) {', '.join(sorted(unknown))}")
        try:
            m = cls(**d)
        except TypeError as exc:
            raise UserError(f"{source}: bad manifest ({exc})") from None
        for name, typ in (("artifact", str), ("sha256", str), ("backend", str), ("model", str),
                          ("precision", str), ("preprocessing", dict), ("recipe", dict),
                          ("trained", bool)):
            if not isinstance(getattr(m, name), typ):
                raise UserError(f"{source}: manifest field {name!r} must be a {typ.__name__}")
        if m.input_kind not in INPUT_KINDS:
            raise UserError(f"{source}: manifest input_kind must be one of {', '.join(INPUT_KINDS)}, "
                            f"got {m.input_kind!r}")
        if not isinstance(m.files, dict) or not all(isinstance(v, str) and "/" not in v and "\\" not in v
                                                     for v in m.files.values()):
            raise UserError(f"{source}: manifest field 'files' must map roles to file names")
        for name in ("data", "validation_pack", "calibration", "validation"):
            if getattr(m, name) is not None and not isinstance(getattr(m, name), dict):
                raise UserError(f"{source}: manifest field {name!r} must be an object or null")
        return m

    def data_record(self):
        """The data set this artifact was calibrated and validated on (None when unrecorded)."""
        from lkca_edge.datarecord import DataRecord

        if self.data is not None:
            return DataRecord.from_dict(self.data, "manifest field 'data'")
        legacy = (self.calibration or {}).get("dataset")  # schema /1 recorded only the spec
        return DataRecord.from_dict(legacy) if isinstance(legacy, str) else None

    def write(self, artifact: str | Path) -> Path:
        return write_json(self.path_for(artifact), self.to_dict())


def read_manifest(artifact: str | Path) -> Manifest:
    """The manifest beside ``artifact``; one clear error when it is missing or malformed."""
    path = Manifest.path_for(artifact)
    if not path.exists():
        raise UserError(f"no manifest beside {artifact} (expected {path.name}); "
                        f"artifacts made by `lkca-edge export` carry one")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    return Manifest.from_dict(data, source=str(path))


def verify_artifact(artifact: str | Path, manifest: Manifest) -> None:
    """Refuse an artifact whose bytes no longer match its manifest's sha256."""
    actual = sha256_of(artifact)
    if actual != manifest.sha256:
        raise UserError(f"{artifact} does not match its manifest (sha256 {actual[:12]}... != "
                        f"{manifest.sha256[:12]}...): the file changed since export; "
                        f"re-export it or pass --no-verify")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
