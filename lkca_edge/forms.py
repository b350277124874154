"""Names of the LKCA operator forms and which one each backend exports by default (no torch)."""

from __future__ import annotations

from lkca_edge.errors import unknown_name

LKCA_FORMS = ("conv", "toeplitz", "frozen", "frozen-linear")

# (backend, precision) -> form exported unless the user forces one with --form.
# The frozen matrix replaces a (2g-1)^2 convolution over D channels by one constant matmul;
# the Linear layout keeps the constant on the right, which int8 kernels (LiteRT's batch-matmul
# in particular) need. Measured table and how to re-measure it: benchmarks/README.md.
EXPORT_FORM_RULES: dict[tuple[str, str], str] = {
    ("executorch", "fp32"): "frozen-linear",
    ("executorch", "int8"): "frozen-linear",
    ("tflite", "fp32"): "frozen-linear",
    ("tflite", "int8"): "frozen-linear",
    ("onnx", "fp32"): "frozen-linear",
    ("onnx", "int8"): "frozen-linear",
    ("coreml", "fp32"): "frozen-linear",
    ("coreml", "fp16"): "frozen-linear",
    ("coreml", "int8"): "frozen-linear",
}
EXPORT_DEFAULT_FORM = "frozen-linear"


def check_form(form: str) -> str:
    if form not in LKCA_FORMS:
        raise unknown_name("form", form, LKCA_FORMS)
    return form


def default_export_form(backend: str, precision: str) -> str:
    return EXPORT_FORM_RULES.get((backend, precision), EXPORT_DEFAULT_FORM)
