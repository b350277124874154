"""Artifact manifests: ``<artifact>.manifest.json`` beside every artifact.

A manifest says what the artifact is (model, config, form, backend, recipe, precision), how it
was made (calibration, tool versions, time), which data it was calibrated and validated on (a
data record with its label names), how to feed it (I/O, preprocessing), that it is the same file
(sha256) and how it validated, with the validation pack that lets any machine re-validate it.
No torch import.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lkca_edge.errors import UserError, brief
from lkca_edge.fileio import write_json
from lkca_edge.preprocessing import INPUT_KINDS

SCHEMA = "lkca-edge-manifest/2"
READABLE_SCHEMAS = ("lkca-edge-manifest/1", SCHEMA)  # /1 had no data record, pack or trained


def _update(h, f: Path) -> None:
    from lkca_edge.safeio import open_regular

    with open_regular(f, "artifact file", limit=1 << 40) as fh:  # never a FIFO
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def sha256_of(path: str | Path, files: list[Path] | tuple[Path, ...] | None = None) -> str:
    """sha256 of an artifact: a file, or a directory's files (relative names + contents,
    sorted). ``files`` (a backend's ``artifact_files``) lists every file its runtime opens: for
    a file artifact, the files beside it (ONNX external data) follow its bytes by relative name
    and contents; a lone file hashes as its bytes alone."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        members = sorted(files) if files is not None else \
            sorted(p for p in path.rglob("*") if p.is_file())
        for f in members:
            h.update(str(Path(f).relative_to(path)).encode() + b"\0")
            _update(h, Path(f))
        return h.hexdigest()
    _update(h, path)
    for f in sorted(Path(f) for f in (files or ()) if Path(f) != path):
        h.update(b"\0" + str(f.relative_to(path.parent)).encode() + b"\0")
        _update(h, f)
    return h.hexdigest()


def size_of(path: str | Path, files: list[Path] | tuple[Path, ...] | None = None) -> int:
    path = Path(path)
    if files is not None:
        return sum(Path(f).stat().st_size for f in set(map(Path, files)) | ({path} if path.is_file() else set()))
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
        """A manifest checked field by field (types from the annotations above, then the
        contents: config sizes, preprocessing, I/O shapes, a known precision, ...)."""
        from lkca_edge.schemas import check_fields

        if not isinstance(d, dict):
            raise UserError(f"{source}: not a JSON object")
        if d.get("schema") not in READABLE_SCHEMAS:
            raise UserError(f"{source}: unsupported manifest schema {brief(d.get('schema'))} "
                            f"(expected {SCHEMA})")
        check_fields(cls, d, source)
        m = cls(**d)
        m.check_contents(source)
        return m

    def check_contents(self, source: str) -> None:
        """What the types alone do not say; every failure names ``source`` and the field."""
        from lkca_edge.gates import GATES
        from lkca_edge.models_config import LIMITS, ModelConfig
        from lkca_edge.preprocessing import Preprocessing
        from lkca_edge.schemas import check_value

        def bad(field: str, why: str) -> UserError:
            return UserError(f"{source}: field {field!r} {why}")

        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise bad("sha256", f"must be 64 hex digits, got {brief(self.sha256)}")
        if not self.artifact or Path(self.artifact).name != self.artifact or self.artifact in (".", ".."):
            raise bad("artifact", f"must be a plain file name, got {brief(self.artifact)}")
        if self.precision not in GATES:
            raise bad("precision", f"is {brief(self.precision)}, not a known precision "
                                   f"({', '.join(GATES)}): no validation gate applies")
        for name in ("size_bytes", "params", "macs"):
            if getattr(self, name) < 0:
                raise bad(name, "must be 0 or more")
        if self.config:  # {} for a network that is no zoo architecture (it has no config)
            ModelConfig.from_dict(self.config, f"{source}: field 'config'")
        try:
            Preprocessing.from_dict(self.preprocessing)
        except UserError as exc:
            raise UserError(f"{source}: field 'preprocessing': {exc}") from None
        except TypeError as exc:
            raise bad("preprocessing", f"is malformed ({exc})") from None
        check_value(self.recipe.get("name", ""), str, source, "recipe.name")
        for key, hint in (("checkpoint", str | None), ("pretrained", str | None),
                          ("format", str | None), ("checkpoint_sha256", str | None),
                          ("overrides", dict[str, int | None])):
            if key in self.source:
                check_value(self.source[key], hint, source, f"source.{key}")
        for key, value in (self.source.get("overrides") or {}).items():
            lo, hi = LIMITS.get(key, (None, None))
            if lo is None:
                raise bad(f"source.overrides.{brief(key, 40)}", "is not a model override")
            if value is not None and not lo <= value <= hi:
                raise bad(f"source.overrides.{key}", f"must be between {lo} and {hi:,}, got {value:,}")
        for key, hint in (("runnable", bool), ("estimate", bool), ("passed", bool | None),
                          ("accuracy", float | None), ("reference_accuracy", float | None),
                          ("top1_agreement", float | None), ("max_abs_err", float | None)):
            if self.validation is not None and key in self.validation:
                check_value(self.validation[key], hint, source, f"validation.{key}")
        if self.input_kind not in INPUT_KINDS:
            raise bad("input_kind", f"must be one of {', '.join(INPUT_KINDS)}, got {brief(self.input_kind)}")
        for role, name in self.files.items():
            check_value(name, str, source, f"files.{brief(role, 40)}")
            if not name or Path(name).name != name or name in (".", ".."):
                raise bad(f"files.{brief(role, 40)}", f"must be a plain file name, got {brief(name)}")
        for side in ("inputs", "outputs"):
            for i, spec in enumerate(getattr(self, side)):
                where = f"{side}[{i}]"
                check_value(spec, dict, source, where)
                check_value(spec.get("name"), str, source, f"{where}.name")
                check_value(spec.get("dtype"), str, source, f"{where}.dtype")
                # a dimension is a size; only the batch dimension may be named (dynamic: "batch")
                check_value(spec.get("shape"), list[int | str], source, f"{where}.shape")
                if not 1 <= len(spec["shape"]) <= 8 or not all(
                        0 <= n <= 1 << 24 if isinstance(n, int) else i == 0 and 0 < len(n) <= 64
                        for i, n in enumerate(spec["shape"])):
                    raise bad(f"{where}.shape", f"is not a tensor shape: {brief(spec['shape'])}")
                for key, hint in (("scale", float), ("zero_point", int)):
                    if key in spec:
                        check_value(spec[key], hint, source, f"{where}.{key}")

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
    from lkca_edge.safeio import read_json

    path = Manifest.path_for(artifact)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"no manifest beside {artifact} (expected {path.name}); "
                        f"artifacts made by `lkca-edge export` carry one")
    data = read_json(path, "manifest")  # a regular file, bounded in size and nesting
    return Manifest.from_dict(data, source=str(path))


def verify_artifact(artifact: str | Path, manifest: Manifest,
                    files: list[Path] | tuple[Path, ...] | None = None) -> None:
    """Refuse an artifact whose bytes (every one of ``files``, what its runtime opens) no longer
    match its manifest's sha256."""
    actual = sha256_of(artifact, files)
    if actual != manifest.sha256:
        raise UserError(f"{artifact} does not match its manifest (sha256 {actual[:12]}... != "
                        f"{manifest.sha256[:12]}...): the file changed since export; "
                        f"re-export it or pass --no-verify")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
