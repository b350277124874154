"""TFLite metadata, written without tflite-support (which pins numpy<2).

The standard layout TFLite Support, MediaPipe Tasks and Android Studio's ML Model Binding read:
a ``ModelMetadata`` flatbuffer (schema ``metadata_schema.fbs``, file identifier ``M001``) stored
in a model buffer named by a ``TFLITE_METADATA`` entry of the model's ``metadata`` list, and the
associated files (here the labels) in a ZIP archive appended to the .tflite (stored, not
compressed), which the flatbuffer reader ignores.

The metadata tables are built with the ``flatbuffers`` runtime from their field numbers in the
schema; the model is rewritten with the TFLite schema's object API that ai-edge-litert ships,
constant buffers re-aligned to 16 bytes as the TFLite converter writes them.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

import numpy as np

from lkca_edge.errors import UserError

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
# The oldest metadata parser that reads every field written here (all from schema 1.0.0).
MIN_PARSER_VERSION = "1.0.0"

# Enum values of metadata_schema.fbs.
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2           # union ContentProperties
_PROCESS_NORMALIZATION = 1                        # union ProcessUnitOptions
COLOR_SPACES = {"UNKNOWN": 0, "RGB": 1, "GRAYSCALE": 2}
TENSOR_AXIS_LABELS = 2                            # enum AssociatedFileType


@dataclass(frozen=True)
class AssociatedFile:
    name: str
    description: str
    type: int = TENSOR_AXIS_LABELS


@dataclass(frozen=True)
class ImageTensor:
    """The input: an RGB image normalised as ``(pixel - mean) / std`` (pixel units 0..255)."""

    name: str
    description: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color_space: str = "RGB"
    stats_min: tuple[float, ...] = ()
    stats_max: tuple[float, ...] = ()


@dataclass(frozen=True)
class FeatureTensor:
    """The output: one score per class, the labels file on its class axis."""

    name: str
    description: str
    associated_files: tuple[AssociatedFile, ...] = ()


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    description: str
    version: str
    author: str
    license: str
    inputs: tuple[ImageTensor, ...]
    outputs: tuple[FeatureTensor, ...]
    files: dict = field(default_factory=dict)  # associated file name -> bytes


# -- the ModelMetadata flatbuffer -------------------------------------------------------------------
def metadata_buffer(md: ModelMetadata) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier M001) for ``md``."""
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def string(s: str | None):
        return b.CreateString(s) if s else None

    def vector(offsets: list[int]):
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def floats(values) -> int:
        return b.CreateNumpyVector(np.asarray(values, "<f4"))

    def table(fields: list[tuple[int, str, object]]) -> int:
        """Fields as (slot, kind, value); kind 'offset' | 'uint8' | 'int8'. None is left out."""
        b.StartObject(max((slot for slot, _, _ in fields), default=-1) + 1)
        for slot, kind, value in fields:
            if value is None:
                continue
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "uint8":
                b.PrependUint8Slot(slot, value, 0)
            else:
                b.PrependInt8Slot(slot, value, 0)
        return b.EndObject()

    def associated_file(f: AssociatedFile) -> int:
        name, description = string(f.name), string(f.description)
        return table([(0, "offset", name), (1, "offset", description), (2, "int8", f.type)])

    def stats(lo, hi) -> int | None:
        if not lo and not hi:
            return None
        hi_vec, lo_vec = floats(hi), floats(lo)
        return table([(0, "offset", hi_vec), (1, "offset", lo_vec)])  # Stats: max, min

    def image_tensor(t: ImageTensor) -> int:
        name, description = string(t.name), string(t.description)
        props = table([(0, "int8", COLOR_SPACES[t.color_space])])  # ImageProperties.color_space
        content = table([(0, "uint8", _CONTENT_IMAGE), (1, "offset", props)])
        mean, std = floats(t.mean), floats(t.std)
        norm = table([(0, "offset", mean), (1, "offset", std)])  # NormalizationOptions
        unit = table([(0, "uint8", _PROCESS_NORMALIZATION), (1, "offset", norm)])  # ProcessUnit
        units = vector([unit])
        st = stats(t.stats_min, t.stats_max)
        # TensorMetadata: name, description, dimension_names, content, process_units, stats, files
        return table([(0, "offset", name), (1, "offset", description), (3, "offset", content),
                      (4, "offset", units), (5, "offset", st)])

    def feature_tensor(t: FeatureTensor) -> int:
        name, description = string(t.name), string(t.description)
        props = table([])  # FeatureProperties has no fields
        content = table([(0, "uint8", _CONTENT_FEATURE), (1, "offset", props)])
        files = vector([associated_file(f) for f in t.associated_files]) if t.associated_files else None
        return table([(0, "offset", name), (1, "offset", description), (3, "offset", content),
                      (6, "offset", files)])

    inputs = vector([image_tensor(t) for t in md.inputs])
    outputs = vector([feature_tensor(t) for t in md.outputs])
    subgraph = table([(2, "offset", inputs), (3, "offset", outputs)])  # SubGraphMetadata
    subgraphs = vector([subgraph])
    name, description, version = string(md.name), string(md.description), string(md.version)
    author, license_, parser = string(md.author), string(md.license), string(MIN_PARSER_VERSION)
    root = table([(0, "offset", name), (1, "offset", description), (2, "offset", version),
                  (3, "offset", subgraphs), (4, "offset", author), (5, "offset", license_),
                  (7, "offset", parser)])
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


# -- attaching it to a model ------------------------------------------------------------------------
def with_metadata(model: bytes, md: ModelMetadata) -> bytes:
    """``model`` (a .tflite) with ``md`` as its TFLITE_METADATA buffer and ``md.files`` zipped
    onto its end. An existing TFLITE_METADATA entry is replaced."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    if model[4:8] != MODEL_IDENTIFIER:
        raise UserError("not a TFLite flatbuffer (no 'TFL3' identifier): cannot add metadata")
    tree = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    buffers = tree.buffers or []
    for buf in buffers:
        # Weights stored after the flatbuffer (ai-edge-quantizer writes them so) would move when
        # it is rebuilt: read them back into the flatbuffer, as the converter writes small models.
        offset, size = int(getattr(buf, "offset", 0) or 0), int(getattr(buf, "size", 0) or 0)
        if offset > 1:
            if offset + size > len(model):
                raise UserError("a weight buffer of this .tflite lies past its end; cannot add metadata")
            buf.data = np.frombuffer(model, np.uint8, count=size, offset=offset).copy()
            buf.offset = buf.size = 0
    if sum(len(b.data) for b in buffers if b.data is not None) > (1 << 31) - (1 << 24):
        raise UserError("this .tflite is too large (near 2 GB) to add TFLite metadata inside it")
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata_buffer(md), np.uint8)
    entries = [m for m in (tree.metadata or []) if _text(m.name) == METADATA_NAME]
    if entries:
        buffers[entries[0].buffer] = buffer
    else:
        buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(buffers) - 1
        tree.metadata = [*(tree.metadata or []), entry]
    tree.buffers = [_Aligned(buf) for buf in buffers]
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(tree.Pack(builder), file_identifier=MODEL_IDENTIFIER)
    out = io.BytesIO()
    out.write(builder.Output())
    if md.files:
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
            for name, data in md.files.items():
                zf.writestr(name, data)
    return out.getvalue()


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value or "")


class _Aligned:
    """A BufferT packed with its bytes 16-byte aligned (the object API aligns them to 1)."""

    ALIGNMENT = 16

    def __init__(self, buf):
        self.buf = buf

    def Pack(self, builder):  # noqa: N802 - the flatbuffers object API's name
        from ai_edge_litert import schema_py_generated as schema

        data = None
        if self.buf.data is not None and len(self.buf.data):
            payload = np.asarray(self.buf.data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), self.ALIGNMENT)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        schema.BufferAddOffset(builder, int(self.buf.offset or 0))
        schema.BufferAddSize(builder, int(self.buf.size or 0))
        return schema.BufferEnd(builder)


# -- reading it back (this project's own check; tests use tflite-support's reader) -------------
def read_metadata(model: bytes) -> dict | None:
    """{name, description, version, input: {...}, output: {...}, files: [...]} from a .tflite's
    TFLITE_METADATA, or None when it has none."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAs(model, 0)
    index = None
    for i in range(m.MetadataLength()):
        if _text(m.Metadata(i).Name()) == METADATA_NAME:
            index = m.Metadata(i).Buffer()
    if index is None:
        return None
    data = m.Buffers(index).DataAsNumpy().tobytes()
    if data[4:8] != METADATA_IDENTIFIER:
        raise UserError("the TFLITE_METADATA buffer is not a metadata flatbuffer (no 'M001')")
    files: list[str] = []
    if zipfile.is_zipfile(io.BytesIO(model)):
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            files = zf.namelist()
    return {"bytes": len(data), "files": files}
